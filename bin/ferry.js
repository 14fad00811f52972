#!/usr/bin/env node
// ferry's command-line launcher (package.json "bin"): registers tsx so the TypeScript CLI runs
// without a build step, then hands argv and the process's streams to cli/main.ts.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../cli/main.ts');
const code = await runCli(process.argv.slice(2), { env: process.env, stdout: process.stdout, stderr: process.stderr });
process.exitCode = code;
