// The page's pure decisions, in node without a browser: formatting, where a 422 error is
// shown, a body's content type, rates from status samples, and the state shown when the server
// does not report one yet.
import assert from 'node:assert/strict';
import { test } from 'node:test';

// These modules touch the DOM only when their functions run, so node can import them.
const format = await import('../../ui/format.js');
const { slotFor } = await import('../../ui/views/create.js');
const { stateOf } = await import('../../ui/views/pipelines.js');
const { contentTypeOf, rates } = await import('../../ui/views/pipeline.js');

test('numbers carry separators and units', () => {
  assert.equal(format.num(null), '–');
  assert.match(format.num(1234567), /^1\D234\D567$/);
  assert.equal(format.duration(250), '250 ms');
  assert.equal(format.duration(1500), '1.5 s');
  assert.equal(format.duration(90_000), '1.5 min');
  assert.equal(format.bytes(512), '512 B');
  assert.equal(format.bytes(1536), '1.5 KiB');
  assert.equal(format.lag(null), '–');
  assert.equal(format.lag(format.END_OF_STREAM), '–');
  assert.equal(format.lag(1000, 3500), '2.5 s');
  assert.equal(format.lag(5000, 3500), '0 ms');
});

test('a 422 field names the input its error is shown at', () => {
  assert.equal(slotFor('name'), 'name');
  assert.equal(slotFor('time.field'), 'time-field');
  assert.equal(slotFor('time.max_out_of_orderness'), 'time-max_out_of_orderness');
  assert.equal(slotFor('time'), 'time-field');
  assert.equal(slotFor('operators[2].gap'), 'op-2');
  assert.equal(slotFor('operators[10].functions[1]'), 'op-10');
  assert.equal(slotFor('operators'), 'operators');
  assert.equal(slotFor('partitions'), null);
});

test('a pipeline without status.state is running', () => {
  assert.equal(stateOf({}), 'running');
  assert.equal(stateOf(undefined), 'running');
  assert.equal(stateOf({ state: 'failed', error: 'bad record' }), 'failed');
});

test('a body is JSON when it parses whole, NDJSON otherwise', () => {
  assert.equal(contentTypeOf('{"a": 1}'), 'application/json');
  assert.equal(contentTypeOf('[{"a": 1}, {"a": 2}]'), 'application/json');
  assert.equal(contentTypeOf('{"a": 1}\n{"a": 2}'), 'application/x-ndjson');
});

test('rates come from consecutive samples and never go below zero', () => {
  const samples = [
    { t: 100, events: 0, late: 0 },
    { t: 102, events: 10, late: 2 },
    { t: 106, events: 10, late: 2 },
    // A restore takes the counters back: not a negative rate.
    { t: 107, events: 4, late: 0 },
  ];
  assert.deepEqual(rates(samples), [[102, 106, 107], [5, 0, 0], [1, 0, 0]]);
  assert.deepEqual(rates(samples.slice(0, 1)), [[], [], []]);
});
