// The bugs the chaos campaign can plant in its own control worker (bench/chaos/control-worker.ts)
// to prove the invariant checker catches them.
export const PLANTS = ['skip-release-reservation'] as const;
