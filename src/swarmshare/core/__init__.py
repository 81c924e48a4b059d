"""The pure core of swarmshare.

Values in, values out: manifests (BitTorrent v2 info dicts and piece layers, in strict bencode)
and their merkle hashes, .torrent files and magnet links, the chunk-size rule, the discovery
announcement codec, catalogues, where a chunk lives, and the download scheduler. Nothing here
opens a socket or a file, starts a thread, reads a clock, or touches asyncio; callers pass time
in as `now`.
"""
