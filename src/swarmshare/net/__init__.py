"""asyncio adapters: UDP discovery, the HTTP peer server and client, the seed-compatible edge."""
