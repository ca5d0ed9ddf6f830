"""Trust: signed bundles, provenance policy, drift monitoring, bundle inspection."""
