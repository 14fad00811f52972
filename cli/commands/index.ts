// Every command, in the order the help lists them.
import type { Command } from '../command.js';
import { driftCommands } from './drift.js';
import { fleetCommands } from './fleet.js';
import { hostCommands } from './hosts.js';
import { inventoryCommands } from './inventory.js';
import { migrationCommands } from './migrations.js';
import { operationCommands } from './operations.js';
import { rebalanceCommands } from './rebalance.js';
import { vmConsoleCommands } from './vm-console.js';
import { vmV2vCommands } from './vm-v2v.js';
import { vmCommands } from './vms.js';

export const COMMANDS: Command[] = [...hostCommands, ...vmCommands, ...vmConsoleCommands, ...vmV2vCommands, ...migrationCommands, ...inventoryCommands, ...operationCommands, ...fleetCommands, ...rebalanceCommands, ...driftCommands];

/** The first words: hosts, vms, migrate, migrations, templates, networks, operations, evacuate, evacuations, plans, rebalance, rebalances, schedules, drift, reconcile. */
export const GROUPS = [...new Set(COMMANDS.map((c) => c.words[0]!))];
