"""API wing: who is calling (static tokens, OIDC ID tokens, the policy's tenants)."""
