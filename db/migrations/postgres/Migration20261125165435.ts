import { Migration } from '@mikro-orm/migrations';

export class Migration20261125165435 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "allocation" ("id" varchar(255) not null, "host_id" varchar(255) not null, "vm_id" varchar(255) not null, "kind" varchar(255) not null, "cpus" int not null, "memory_mib" int not null, "disk_gib" int not null, "datastore_id" varchar(255) null, "operation_id" varchar(255) null, "created_at" timestamptz not null, constraint "allocation_pkey" primary key ("id"));`);
    this.addSql(`create index "allocation_host_id_index" on "allocation" ("host_id");`);
    this.addSql(`create index "allocation_vm_id_index" on "allocation" ("vm_id");`);
    this.addSql(`create index "allocation_datastore_id_index" on "allocation" ("datastore_id");`);
    this.addSql(`alter table "allocation" add constraint "allocation_operation_host_vm_unique" unique ("operation_id", "host_id", "vm_id");`);

    this.addSql(`create table "datastore" ("id" varchar(255) not null, "name" varchar(255) not null, "shared" boolean not null default false, "capacity_gib" int not null, "throughput_mibps" int not null, "host_ids" jsonb not null, "version" int not null default 1, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "datastore_pkey" primary key ("id"));`);
    this.addSql(`alter table "datastore" add constraint "datastore_name_unique" unique ("name");`);

    this.addSql(`create table "host" ("id" varchar(255) not null, "name" varchar(255) not null, "rack" varchar(255) null, "cpu_model" varchar(255) not null, "cpu_features" jsonb not null, "cpus" int not null, "memory_mib" int not null, "cpu_overcommit" double precision not null default 4, "memory_overcommit" double precision not null default 1, "maintenance" boolean not null default false, "state" varchar(255) not null default 'up', "driver" varchar(255) not null default 'sim', "migration_address" varchar(255) null, "tags" jsonb not null, "max_outgoing_migrations" int not null default 2, "max_incoming_migrations" int not null default 2, "version" int not null default 1, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "host_pkey" primary key ("id"));`);

    this.addSql(`create table "ip_allocation" ("id" varchar(255) not null, "network_id" varchar(255) not null, "address" varchar(255) not null, "vm_id" varchar(255) not null, "created_at" timestamptz not null, constraint "ip_allocation_pkey" primary key ("id"));`);
    this.addSql(`create index "ip_allocation_vm_id_index" on "ip_allocation" ("vm_id");`);
    this.addSql(`alter table "ip_allocation" add constraint "ip_allocation_network_address_unique" unique ("network_id", "address");`);
    this.addSql(`alter table "ip_allocation" add constraint "ip_allocation_network_vm_unique" unique ("network_id", "vm_id");`);

    this.addSql(`create table "ip_pool" ("id" varchar(255) not null, "network_id" varchar(255) not null, "range_start" varchar(255) not null, "range_end" varchar(255) not null, "created_at" timestamptz not null, constraint "ip_pool_pkey" primary key ("id"));`);
    this.addSql(`create index "ip_pool_network_id_index" on "ip_pool" ("network_id");`);

    this.addSql(`create table "network" ("id" varchar(255) not null, "name" varchar(255) not null, "vlan" int null, "cidr" varchar(255) not null, "gateway" varchar(255) not null, "dns" jsonb not null, "host_ids" jsonb not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "network_pkey" primary key ("id"));`);
    this.addSql(`alter table "network" add constraint "network_name_unique" unique ("name");`);

    this.addSql(`create table "operation" ("id" varchar(255) not null, "workflow_id" varchar(255) not null, "run_id" varchar(255) null, "kind" varchar(255) not null, "subkind" varchar(255) null, "vm_id" varchar(255) null, "state" varchar(255) not null default 'running', "stage" varchar(255) null, "source_host_id" varchar(255) null, "target_host_id" varchar(255) null, "details" jsonb not null, "error" text null, "started_at" timestamptz not null, "ended_at" timestamptz null, "version" int not null default 1, "updated_at" timestamptz not null, constraint "operation_pkey" primary key ("id"));`);
    this.addSql(`create index "operation_workflow_id_index" on "operation" ("workflow_id");`);
    this.addSql(`create index "operation_vm_id_index" on "operation" ("vm_id");`);
    this.addSql(`create index "operation_started_at_id_index" on "operation" ("started_at", "id");`);

    this.addSql(`create table "template" ("id" varchar(255) not null, "name" varchar(255) not null, "os" varchar(255) not null, "image_path" varchar(255) not null, "datastore_ids" jsonb not null, "disk_gib" int not null, "min_memory_mib" int not null, "required_cpu_features" jsonb not null, "owner" varchar(255) null, "department" varchar(255) null, "tags" jsonb not null, "source_vm_id" varchar(255) null, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "template_pkey" primary key ("id"));`);
    this.addSql(`alter table "template" add constraint "template_name_unique" unique ("name");`);

    this.addSql(`create table "vm" ("id" varchar(255) not null, "name" varchar(255) not null, "state" varchar(255) not null default 'provisioning', "host_id" varchar(255) null, "datastore_id" varchar(255) null, "ip" varchar(255) null, "network_id" varchar(255) null, "mac" varchar(255) null, "cpus" int not null, "memory_mib" int not null, "disk_gib" int not null, "template_id" varchar(255) null, "disk_paths" jsonb not null, "seed_path" varchar(255) null, "cpu_features" jsonb not null, "tags" jsonb not null, "workload" jsonb null, "error" text null, "version" int not null default 1, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "vm_pkey" primary key ("id"));`);
    this.addSql(`alter table "vm" add constraint "vm_name_unique" unique ("name");`);
    this.addSql(`create index "vm_host_id_index" on "vm" ("host_id");`);
  }

}
