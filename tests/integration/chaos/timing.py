"""How long the chaos goes on, and how late what it disturbs may be."""

from __future__ import annotations

import os

CHAOS_SECONDS = float(os.environ.get("NSPROV_CHAOS_SECONDS", "15"))
LEASE_SECONDS = 3.0
# How late an expiry may be beyond the time without a working leader: a new leader's
# first pass, an informer's backoff after the API server returns, a loaded machine
# (runs on this 2-core machine were at most 0.5 s beyond).
EXPIRY_SLACK = 1.0
# How long after its expiry a namespace may still be there when the test looks, the
# time without a leader unmeasured then (the tracker has stopped).
STILL_THERE_SLACK = 5.0
SHORT_TTL = (3, 8)
LONG_TTL = (10, int(min(60.0, max(20.0, CHAOS_SECONDS * 1.5))))
DRIVERS = 3
# How often kube-apiserver is SIGKILLed at least: three times in a long run, once in a short.
API_SERVER_KILLS = 3 if CHAOS_SECONDS >= 120 else 1
# How soon after the API server's /readyz nsprov must create a namespace again.
RECOVERY_SECONDS = 5.0
# A keyed create is retried (connection lost, 503) for this long.
RETRY_SECONDS = 30.0
# How long a new RoleBinding may take to count in the API server's authorizer (a 600 s
# run on this 2-core machine saw 11 of 4,914 kubeconfigs refused at first, for up to 2.1 s).
RBAC_LAG_SECONDS = 5.0
