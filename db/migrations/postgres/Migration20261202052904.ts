import { Migration } from '@mikro-orm/migrations';

export class Migration20261202052904 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "drift" ("id" varchar(255) not null, "kind" varchar(255) not null, "vm_id" varchar(255) not null, "host_id" varchar(255) not null, "state" varchar(255) not null default 'open', "expected" jsonb not null, "observed" jsonb not null, "operation_id" varchar(255) null, "resolution" varchar(255) null, "resolved_by" varchar(255) null, "detected_at" timestamptz not null, "last_seen_at" timestamptz not null, "resolved_at" timestamptz null, "version" int not null default 1, constraint "drift_pkey" primary key ("id"));`);
    this.addSql(`create index "drift_state_index" on "drift" ("state");`);

    this.addSql(`create table "plan" ("id" varchar(255) not null, "kind" varchar(255) not null, "subject" varchar(255) not null, "state" varchar(255) not null default 'proposed', "request" jsonb not null, "plan" jsonb not null, "workflow_id" varchar(255) null, "refusal" text null, "created_at" timestamptz not null, "decided_at" timestamptz null, "version" int not null default 1, constraint "plan_pkey" primary key ("id"));`);

    this.addSql(`alter table "vm" add column "anti_affinity_tag" varchar(255) null, add column "affinity_tag" varchar(255) null, add column "last_migrated_at" timestamptz null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "drift" cascade;`);

    this.addSql(`drop table if exists "plan" cascade;`);

    this.addSql(`alter table "vm" drop column "anti_affinity_tag", drop column "affinity_tag", drop column "last_migrated_at";`);
  }

}
