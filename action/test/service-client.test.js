import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseRetryAfter, serviceBaseUrl } from '../service-client.js';

test('Retry-After: seconds, HTTP dates, garbage', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000);
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), null);
  assert.equal(parseRetryAfter(null, now), null);
});

test('service URLs: trailing slashes dropped, path prefixes kept, nonsense refused', () => {
  assert.equal(serviceBaseUrl('http://127.0.0.1:8080/'), 'http://127.0.0.1:8080');
  assert.equal(serviceBaseUrl('https://example.com/nsprov//'), 'https://example.com/nsprov');
  assert.equal(serviceBaseUrl('https://example.com'), 'https://example.com');
  assert.throws(() => serviceBaseUrl('example.com'), /not a valid URL/);
  assert.throws(() => serviceBaseUrl('ftp://example.com'), /http\(s\)/);
  assert.throws(() => serviceBaseUrl('https://u:p@example.com'), /credentials/);
  assert.throws(() => serviceBaseUrl('https://example.com/?x=1'), /query/);
});
