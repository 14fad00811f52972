/**
 * Inventory: hosts (with computed usage), datastores, templates, networks + IP pools, VMs.
 *
 * Every function takes the Db (a fresh fork per call) or the caller's EntityManager. Creates
 * validate input (ValidationError naming the field, nothing written) and turn a taken id or name
 * into a ConflictError naming it. Updates of versioned rows (hosts, VMs) take an optional
 * `expectedVersion`: given, a stale version is a ConflictError (the caller decided on old data);
 * omitted, a concurrent writer only makes the update re-read and re-apply its own fields.
 */
export * from './hosts.js';
export * from './templates.js';
export * from './networks.js';
export * from './vms.js';
