import { Migration } from '@mikro-orm/migrations';

export class Migration20261202062805_api_tokens extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "api_token" ("id" varchar(255) not null, "name" varchar(255) not null, "role" varchar(255) not null, "hash" varchar(255) not null, "created_at" timestamptz not null, "created_by" varchar(255) not null, "expires_at" timestamptz null, "revoked_at" timestamptz null, "last_used_at" timestamptz null, constraint "api_token_pkey" primary key ("id"));`);
    this.addSql(`alter table "api_token" add constraint "api_token_name_unique" unique ("name");`);
    this.addSql(`alter table "api_token" add constraint "api_token_hash_unique" unique ("hash");`);

    this.addSql(`create table "idempotency_record" ("id" varchar(255) not null, "principal" varchar(255) not null, "key" varchar(255) not null, "method" varchar(255) not null, "path" text not null, "body_hash" varchar(255) not null, "status" int null, "response" jsonb null, "created_at" timestamptz not null, constraint "idempotency_record_pkey" primary key ("id"));`);
    this.addSql(`alter table "idempotency_record" add constraint "idempotency_record_principal_key_unique" unique ("principal", "key");`);

    this.addSql(`alter table "operation" add column "principal" varchar(255) null;`);
    this.addSql(`create index "operation_principal_index" on "operation" ("principal");`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "api_token" cascade;`);

    this.addSql(`drop table if exists "idempotency_record" cascade;`);

    this.addSql(`drop index "operation_principal_index";`);
    this.addSql(`alter table "operation" drop column "principal";`);
  }

}
