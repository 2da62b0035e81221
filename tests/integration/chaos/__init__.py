"""Chaos: nsprov loses nothing while its replicas and the API server are killed.

Two replicas (leader election on, a 3 s lease, exactly the RBAC k8s/ gives
nsprov) serve a stream of creates, short and longer TTLs, some with an
Idempotency-Key retried until it is answered, while the leader is SIGKILLed
again and again (restarted at once, taking its own Lease back, or later, after
the other replica took over), and the follower and kube-apiserver now and then
(each kind at least once; kube-apiserver three times in a long run). What must
hold afterwards:

- every namespace whose TTL ran out is deleted, late by no more than the time
  without a working leader (no leader, or no API server) plus ``EXPIRY_SLACK``
  (1 s);
- after each API server return, nsprov creates a namespace again within
  ``RECOVERY_SECONDS`` of its /readyz;
- no namespace a client got a 201 for is lost, or deleted before its expiry;
- one Idempotency-Key, one namespace; every kubeconfig handed out worked;
- every surviving namespace has its ServiceAccount and RoleBinding (the
  controller repairs what a kill left half-made), every managed namespace ever
  seen carried an expiry label, and the API server's audit log shows at most one
  successful DELETE from nsprov per namespace, exactly one per expiry;
- the API answered 201, 409 (a key's namespace expired) or 503 + Retry-After.

Two shorter tests follow: the leader killed during a burst of 100 expiries
(exactly one audited DELETE each, test_burst.py), and 200 concurrent keyed creates
while replicas are killed at random (nothing orphaned, every kubeconfig works,
test_flood.py); the first is test_kills.py. Their shared setup (a seed, a watch on
the managed namespaces, two replicas, a leader tracker) is conftest.py's fixtures.

``NSPROV_CHAOS_SECONDS`` (default 15) sets how long the kills of the first test
go on; ``make chaos`` runs it for 600. ``NSPROV_CHAOS_SEED`` repeats a run's choices (the
timing of a real control plane never repeats exactly); a failure names its seed.
A package of its own: no other nsprov may act on the namespaces meanwhile.
"""
