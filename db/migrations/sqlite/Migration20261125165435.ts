import { Migration } from '@mikro-orm/migrations';

export class Migration20261125165435 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table \`allocation\` (\`id\` text not null, \`host_id\` text not null, \`vm_id\` text not null, \`kind\` text not null, \`cpus\` integer not null, \`memory_mib\` integer not null, \`disk_gib\` integer not null, \`datastore_id\` text null, \`operation_id\` text null, \`created_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create index \`allocation_host_id_index\` on \`allocation\` (\`host_id\`);`);
    this.addSql(`create index \`allocation_vm_id_index\` on \`allocation\` (\`vm_id\`);`);
    this.addSql(`create index \`allocation_datastore_id_index\` on \`allocation\` (\`datastore_id\`);`);
    this.addSql(`create unique index \`allocation_operation_host_vm_unique\` on \`allocation\` (\`operation_id\`, \`host_id\`, \`vm_id\`);`);

    this.addSql(`create table \`datastore\` (\`id\` text not null, \`name\` text not null, \`shared\` integer not null default false, \`capacity_gib\` integer not null, \`throughput_mibps\` integer not null, \`host_ids\` json not null, \`version\` integer not null default 1, \`created_at\` datetime not null, \`updated_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create unique index \`datastore_name_unique\` on \`datastore\` (\`name\`);`);

    this.addSql(`create table \`host\` (\`id\` text not null, \`name\` text not null, \`rack\` text null, \`cpu_model\` text not null, \`cpu_features\` json not null, \`cpus\` integer not null, \`memory_mib\` integer not null, \`cpu_overcommit\` double not null default 4, \`memory_overcommit\` double not null default 1, \`maintenance\` integer not null default false, \`state\` text not null default 'up', \`driver\` text not null default 'sim', \`migration_address\` text null, \`tags\` json not null, \`max_outgoing_migrations\` integer not null default 2, \`max_incoming_migrations\` integer not null default 2, \`version\` integer not null default 1, \`created_at\` datetime not null, \`updated_at\` datetime not null, primary key (\`id\`));`);

    this.addSql(`create table \`ip_allocation\` (\`id\` text not null, \`network_id\` text not null, \`address\` text not null, \`vm_id\` text not null, \`created_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create index \`ip_allocation_vm_id_index\` on \`ip_allocation\` (\`vm_id\`);`);
    this.addSql(`create unique index \`ip_allocation_network_address_unique\` on \`ip_allocation\` (\`network_id\`, \`address\`);`);
    this.addSql(`create unique index \`ip_allocation_network_vm_unique\` on \`ip_allocation\` (\`network_id\`, \`vm_id\`);`);

    this.addSql(`create table \`ip_pool\` (\`id\` text not null, \`network_id\` text not null, \`range_start\` text not null, \`range_end\` text not null, \`created_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create index \`ip_pool_network_id_index\` on \`ip_pool\` (\`network_id\`);`);

    this.addSql(`create table \`network\` (\`id\` text not null, \`name\` text not null, \`vlan\` integer null, \`cidr\` text not null, \`gateway\` text not null, \`dns\` json not null, \`host_ids\` json not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create unique index \`network_name_unique\` on \`network\` (\`name\`);`);

    this.addSql(`create table \`operation\` (\`id\` text not null, \`workflow_id\` text not null, \`run_id\` text null, \`kind\` text not null, \`subkind\` text null, \`vm_id\` text null, \`state\` text not null default 'running', \`stage\` text null, \`source_host_id\` text null, \`target_host_id\` text null, \`details\` json not null, \`error\` text null, \`started_at\` datetime not null, \`ended_at\` datetime null, \`version\` integer not null default 1, \`updated_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create index \`operation_workflow_id_index\` on \`operation\` (\`workflow_id\`);`);
    this.addSql(`create index \`operation_vm_id_index\` on \`operation\` (\`vm_id\`);`);
    this.addSql(`create index \`operation_started_at_id_index\` on \`operation\` (\`started_at\`, \`id\`);`);

    this.addSql(`create table \`template\` (\`id\` text not null, \`name\` text not null, \`os\` text not null, \`image_path\` text not null, \`datastore_ids\` json not null, \`disk_gib\` integer not null, \`min_memory_mib\` integer not null, \`required_cpu_features\` json not null, \`owner\` text null, \`department\` text null, \`tags\` json not null, \`source_vm_id\` text null, \`created_at\` datetime not null, \`updated_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create unique index \`template_name_unique\` on \`template\` (\`name\`);`);

    this.addSql(`create table \`vm\` (\`id\` text not null, \`name\` text not null, \`state\` text not null default 'provisioning', \`host_id\` text null, \`datastore_id\` text null, \`ip\` text null, \`network_id\` text null, \`mac\` text null, \`cpus\` integer not null, \`memory_mib\` integer not null, \`disk_gib\` integer not null, \`template_id\` text null, \`disk_paths\` json not null, \`seed_path\` text null, \`cpu_features\` json not null, \`tags\` json not null, \`workload\` json null, \`error\` text null, \`version\` integer not null default 1, \`created_at\` datetime not null, \`updated_at\` datetime not null, primary key (\`id\`));`);
    this.addSql(`create unique index \`vm_name_unique\` on \`vm\` (\`name\`);`);
    this.addSql(`create index \`vm_host_id_index\` on \`vm\` (\`host_id\`);`);
  }

}
