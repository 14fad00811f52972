import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Saga, summarizeCompensations, type RunNonCancellable } from '../../workflows/lib/saga.js';

/** Stands in for CancellationScope.nonCancellable and counts how often it wrapped something. */
function recordingRunner(): { run: RunNonCancellable; calls: () => number } {
  let n = 0;
  return {
    run: async (fn) => {
      n += 1;
      await fn();
    },
    calls: () => n,
  };
}

describe('Saga', () => {
  it('runs compensations in reverse order of registration, each inside runNonCancellable', async () => {
    const order: string[] = [];
    const saga = new Saga();
    for (const name of ['release reservation', 'delete disk', 'release ip', 'undefine vm']) {
      saga.add(name, async () => {
        order.push(name);
      });
    }
    const runner = recordingRunner();
    const results = await saga.compensate(runner.run);
    assert.deepEqual(order, ['undefine vm', 'release ip', 'delete disk', 'release reservation']);
    assert.equal(runner.calls(), 4);
    assert.deepEqual(results, [
      { name: 'undefine vm', ok: true, attempts: 1 },
      { name: 'release ip', ok: true, attempts: 1 },
      { name: 'delete disk', ok: true, attempts: 1 },
      { name: 'release reservation', ok: true, attempts: 1 },
    ]);
  });

  it('retries a failing compensation until it succeeds and reports every failed attempt', async () => {
    let calls = 0;
    const saga = new Saga({ maxAttempts: 4 });
    saga.add('delete disk', async () => {
      calls += 1;
      if (calls < 3) throw new Error(`disk busy (${calls})`);
    });
    const seen: Array<[string, string, number]> = [];
    const results = await saga.compensate(recordingRunner().run, (name, err, attempt) => {
      seen.push([name, (err as Error).message, attempt]);
    });
    assert.equal(calls, 3);
    assert.deepEqual(seen, [
      ['delete disk', 'disk busy (1)', 1],
      ['delete disk', 'disk busy (2)', 2],
    ]);
    assert.deepEqual(results, [{ name: 'delete disk', ok: true, attempts: 3 }]);
  });

  it('a compensation that keeps failing is reported and does not stop the others', async () => {
    const ran: string[] = [];
    const saga = new Saga({ maxAttempts: 2 });
    saga.add('first', async () => {
      ran.push('first');
    });
    saga.add('broken', async () => {
      ran.push('broken');
      throw new Error('host unreachable');
    });
    saga.add('last', async () => {
      ran.push('last');
    });
    const errors: number[] = [];
    const results = await saga.compensate(recordingRunner().run, (_n, _e, attempt) => errors.push(attempt));
    assert.deepEqual(ran, ['last', 'broken', 'broken', 'first']);
    assert.deepEqual(errors, [1, 2]);
    assert.deepEqual(results, [
      { name: 'last', ok: true, attempts: 1 },
      { name: 'broken', ok: false, attempts: 2, error: 'host unreachable' },
      { name: 'first', ok: true, attempts: 1 },
    ]);
    const summary = summarizeCompensations(results);
    assert.equal(summary.ok, false);
    assert.deepEqual(
      summary.failed.map((f) => f.name),
      ['broken'],
    );
    assert.match(summary.summary, /1 of 3 compensation\(s\) failed: broken after 2 attempt\(s\): host unreachable/);
  });

  it('a throwing error reporter does not stop compensating', async () => {
    const saga = new Saga({ maxAttempts: 1 });
    let restRan = false;
    saga.add('rest', async () => {
      restRan = true;
    });
    saga.add('fails', async () => {
      throw new Error('boom');
    });
    const results = await saga.compensate(recordingRunner().run, () => {
      throw new Error('reporter broke');
    });
    assert.equal(restRan, true);
    assert.deepEqual(
      results.map((r) => [r.name, r.ok]),
      [
        ['fails', false],
        ['rest', true],
      ],
    );
  });

  it('a failure raised by runNonCancellable itself counts as a failed attempt', async () => {
    const saga = new Saga({ maxAttempts: 2 });
    saga.add('x', async () => {});
    let n = 0;
    const results = await saga.compensate(async (fn) => {
      n += 1;
      if (n === 1) throw new Error('scope failed');
      await fn();
    });
    assert.deepEqual(results, [{ name: 'x', ok: true, attempts: 2 }]);
  });

  it('pauses between attempts through runNonCancellable, not after the last one', async () => {
    const pauses: number[] = [];
    const saga = new Saga({ maxAttempts: 3, pauseBetweenAttempts: async (a) => void pauses.push(a) });
    saga.add('always fails', async () => {
      throw new Error('nope');
    });
    const runner = recordingRunner();
    const results = await saga.compensate(runner.run);
    assert.deepEqual(pauses, [1, 2]);
    assert.equal(runner.calls(), 5); // 3 attempts + 2 pauses
    assert.equal(results[0]!.attempts, 3);
  });

  it('reports the cause of a wrapped error (ActivityFailure-style) and non-Error throws', async () => {
    const saga = new Saga({ maxAttempts: 1 });
    saga.add('plain', async () => {
      throw { code: 'E42' };
    });
    saga.add('wrapped', async () => {
      throw new Error('Activity task failed', { cause: new Error('disk is locked') });
    });
    const results = await saga.compensate(recordingRunner().run);
    assert.equal(results[0]!.error, 'Activity task failed: disk is locked');
    assert.equal(results[1]!.error, '{"code":"E42"}');
  });

  it('empties the stack: a second compensate undoes nothing twice; clear() forgets everything', async () => {
    let count = 0;
    const saga = new Saga();
    saga.add('once', async () => {
      count += 1;
    });
    assert.equal(saga.size, 1);
    await saga.compensate(recordingRunner().run);
    assert.deepEqual(await saga.compensate(recordingRunner().run), []);
    assert.equal(count, 1);

    saga.add('after commit', async () => {
      count += 100;
    });
    assert.deepEqual(saga.names, ['after commit']);
    saga.clear();
    assert.deepEqual(await saga.compensate(recordingRunner().run), []);
    assert.equal(count, 1);
  });

  it('refuses bad options and registrations, naming the field', () => {
    assert.throws(() => new Saga({ maxAttempts: 0 }), /maxAttempts must be an integer >= 1, got 0/);
    assert.throws(() => new Saga({ maxAttempts: 1.5 }), /maxAttempts/);
    const saga = new Saga();
    assert.throws(() => saga.add('', async () => {}), /compensation name/);
    assert.throws(() => saga.add('x', undefined as never), /compensation "x" must be a function/);
  });
});
