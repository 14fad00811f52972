import { Migration } from '@mikro-orm/migrations';

export class Migration20261202062805_api_tokens extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table \`api_token\` (\`id\` text not null, \`name\` text not null, \`role\` text not null, \`hash\` text not null, \`created_at\` datetime not null, \`created_by\` text not null, \`expires_at\` datetime null, \`revoked_at\` datetime null, \`last_used_at\` datetime null, primary key (\`id\`));`);
    this.addSql(`create unique index \`api_token_name_unique\` on \`api_token\` (\`name\`);`);
    this.addSql(`create unique index \`api_token_hash_unique\` on \`api_token\` (\`hash\`);`);

    this.addSql(`create table \`idempotency_record\` (\`id\` text not null, \`principal\` text not null, \`key\` text not null, \`method\` text not null, \`path\` text not null, \`body_hash\` text not null, \`status\` integer null, \`response\` json null, \`created_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create unique index \`idempotency_record_principal_key_unique\` on \`idempotency_record\` (\`principal\`, \`key\`);`);

    this.addSql(`alter table \`operation\` add column \`principal\` text null;`);
    this.addSql(`create index \`operation_principal_index\` on \`operation\` (\`principal\`);`);
  }

}
