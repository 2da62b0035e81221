"""Chaos: nsprov loses nothing while its replicas and the API server are killed.

Three tests, each with two replicas (leader election on, a 3 s lease, exactly the
RBAC k8s/ gives nsprov) against the test control plane:
- test_kills.py: a stream of creates while the leader, the follower and
  kube-apiserver are SIGKILLed again and again (its docstring lists what must hold);
- test_burst.py: the leader killed during a burst of 100 expiries (exactly one
  audited DELETE each);
- test_flood.py: 200 concurrent keyed creates while replicas are killed at random
  (nothing orphaned, every kubeconfig works).
Their shared setup (a seed, a watch on the managed namespaces, two replicas, a
leader tracker) is conftest.py's fixtures.

``NSPROV_CHAOS_SECONDS`` (default 15) sets how long the kills of the first test
go on; ``make chaos`` runs it for 600. ``NSPROV_CHAOS_SEED`` repeats a run's choices (the
timing of a real control plane never repeats exactly); a failure names its seed.
A package of its own: no other nsprov may act on the namespaces meanwhile.
"""
