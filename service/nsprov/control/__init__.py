"""Controller wing: watches, expiry, the warm pool and the leader's Lease."""
