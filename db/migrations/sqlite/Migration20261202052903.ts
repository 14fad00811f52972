import { Migration } from '@mikro-orm/migrations';

export class Migration20261202052903 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table \`drift\` (\`id\` text not null, \`kind\` text not null, \`vm_id\` text not null, \`host_id\` text not null, \`state\` text not null default 'open', \`expected\` json not null, \`observed\` json not null, \`operation_id\` text null, \`resolution\` text null, \`resolved_by\` text null, \`detected_at\` datetime not null, \`last_seen_at\` datetime not null, \`resolved_at\` datetime null, \`version\` integer not null default 1, primary key (\`id\`));`);
    this.addSql(`create index \`drift_state_index\` on \`drift\` (\`state\`);`);

    this.addSql(`create table \`plan\` (\`id\` text not null, \`kind\` text not null, \`subject\` text not null, \`state\` text not null default 'proposed', \`request\` json not null, \`plan\` json not null, \`workflow_id\` text null, \`refusal\` text null, \`created_at\` datetime not null, \`decided_at\` datetime null, \`version\` integer not null default 1, primary key (\`id\`));`);

    this.addSql(`alter table \`vm\` add column \`anti_affinity_tag\` text null;`);
    this.addSql(`alter table \`vm\` add column \`affinity_tag\` text null;`);
    this.addSql(`alter table \`vm\` add column \`last_migrated_at\` datetime null;`);
  }

}
