"""The pure core of swarmshare.

Values in, values out: manifests and their canonical bytes, the chunk-size rule, the discovery
announcement codec, catalogues, where a chunk lives, and the download scheduler. Nothing here
opens a socket or a file, starts a thread, reads a clock, or touches asyncio; callers pass time
in as `now`.
"""
