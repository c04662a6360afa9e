// The console's latency percentiles agree with Prometheus' histogram_quantile.
// Run by net/tests/console.rs with `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantile } from '../quantile.js';

const bounds = [0.001, 0.01, 0.1, null];
const histogram = (counts) => counts.map((count, i) => ({ leSeconds: bounds[i], count }));
const zero = histogram([0, 0, 0, 0]);
const close = (actual, expected) => assert.ok(Math.abs(actual - expected) < 1e-12, `${actual} != ${expected}`);

test('linear within the bucket holding the rank', () => {
  const after = histogram([0, 10, 10, 10]);
  close(quantile(0.5, zero, after), 0.001 + 0.009 * 0.5);
  close(quantile(0.99, zero, after), 0.001 + 0.009 * 0.99);
});

test('the first bucket starts at zero', () => {
  close(quantile(0.5, zero, histogram([10, 10, 10, 10])), 0.0005);
});

test('only the interval between the polls counts', () => {
  const before = histogram([50, 50, 50, 50]);
  const after = histogram([50, 60, 60, 60]);
  close(quantile(0.5, before, after), 0.0055);
});

test('a rank in the +Inf bucket is the highest finite bound', () => {
  assert.equal(quantile(0.99, zero, histogram([0, 0, 10, 20])), 0.1);
});

test('no requests, no first poll, or no buckets: no value', () => {
  assert.equal(quantile(0.5, zero, zero), null);
  assert.equal(quantile(0.5, null, histogram([1, 1, 1, 1])), null);
  assert.equal(quantile(0.5, [], []), null);
});
