// History <-> JSON for the committed replay histories, in the format other Temporal tools use
// (proto3 JSON: `"eventType": "EVENT_TYPE_..."`, RFC 3339 times, int64 as strings).
//
// The SDK's own `historyToJSON` / `historyFromJSON` (@temporalio/common/lib/proto-utils) are used
// when they work. In this install tree they throw `TypeError: type must be a Type`: npm placed two
// copies of protobufjs 8.8.1 (one under @temporalio/common, one under @temporalio/proto; the
// top-level copy is 7.x for @grpc/proto-loader), and common's protojson extension checks
// `instanceof Type` against its own copy while the History type comes from @temporalio/proto's.
// The fallback does the same conversion with the protojson extension of the protobufjs copy that
// @temporalio/proto itself loads, so type and extension always agree. A JSON history handed to
// `Worker.runReplayHistory` goes through the same broken `historyFromJSON`, so replay tests pass
// the decoded History object instead.
import { createRequire } from 'node:module';
import proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root.js';
import * as sdk from '@temporalio/common/lib/proto-utils.js';

export type History = sdk.History;

interface ProtoJson {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
}

const protoRequire = createRequire(createRequire(import.meta.url).resolve('@temporalio/proto'));
const protojson = protoRequire('protobufjs/ext/protojson') as ProtoJson;
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType('temporal.api.history.v1.History');

function isSplitProtobufjs(err: unknown): boolean {
  return err instanceof TypeError && /must be a Type/.test(err.message);
}

export function historyToJSON(history: History): string {
  try {
    return sdk.historyToJSON(history);
  } catch (err) {
    if (!isSplitProtobufjs(err)) throw err;
    return JSON.stringify(protojson.toJson(historyType, proto.temporal.api.history.v1.History.fromObject(history)), null, 2);
  }
}

export function historyFromJSON(json: unknown): History {
  try {
    return sdk.historyFromJSON(json);
  } catch (err) {
    if (!isSplitProtobufjs(err)) throw err;
    const h = protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History | null;
    if (!h?.events?.length) throw new TypeError('not a history: no events');
    return h;
  }
}
