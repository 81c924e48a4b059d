"""Every bound on what the network (or a manifest) may make us hold, in one place.

Each name carries its unit.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Content model
MIN_CHUNK_BYTES = 64 * KIB
MAX_CHUNK_BYTES = 16 * MIB  # the longest piece accepted (torrents made elsewhere)
MAX_CHOSEN_CHUNK_BYTES = 4 * MIB  # the longest piece `share` picks
TARGET_CHUNKS_PER_FILE = 256
MAX_FILE_BYTES = 1 << 44  # 16 TiB
MAX_FILES_PER_CONTENT = 1_000_000
MAX_CONTENT_BYTES = (1 << 63) - 1  # a signed 64-bit integer (SQLite's); files are bounded each
MAX_CHUNKS_PER_CONTENT = 4_000_000  # a bitmap of 500 KB
MAX_MANIFEST_BYTES = 256 * MIB  # a million small files take about 150 MB
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATH_DEPTH = 64

# Discovery
MAX_DATAGRAM_BYTES = 1200
MAX_PEER_NAME_CHARS = 64
MAX_PEERS = 1024
EXPIRY_INTERVALS = 3
MAX_PEER_INTERVAL_SECONDS = 120.0  # a peer claiming a longer interval is held to this one
MAX_PEERS_PER_ADDRESS = 8  # peer IDs one source address may hold in the table
MAX_PENDING_SOLICIT_ANSWERS = 64
SOLICIT_REPLY_MAX_DELAY_SECONDS = 0.1
CHANGE_ANNOUNCE_DELAY_SECONDS = 0.05

# DNS-SD (mDNS) sightings
MAX_SERVICE_TXT_BYTES = 512  # a peer's TXT record; a bigger one is refused
MAX_SERVICES_TRACKED = 1024  # _swarmshare._tcp instances remembered at once
MAX_SERVICE_RESOLVES_IN_FLIGHT = 8
SERVICE_RESOLVE_TIMEOUT_SECONDS = 3.0
SERVICE_RECORD_TTL_SECONDS = 120  # a vanished peer's records expire after this
SERVICE_UPDATE_MIN_SECONDS = 2.0  # between two TXT updates (catalogue versions) of this peer

# Catalogues
MAX_CATALOG_BYTES = 32 * MIB
MAX_CATALOG_ITEMS = 100_000
CATALOG_REFETCH_MIN_SECONDS = 1.0  # between two fetches of one peer's catalogue
CATALOG_REFETCH_MAX_SECONDS = 60.0  # the longest backoff for a peer whose catalogue keeps changing
CATALOG_ITEMS_PER_SECOND_PER_PEER = 2000.0  # a big catalogue is re-fetched less often
MAX_NAME_CHECKS_IN_FLIGHT = 4  # manifests fetched at once to settle what a content is called
MAX_CHECKED_NAMES = 10_000  # content names learnt from manifests, kept
LISTING_DISCREDIT_SECONDS = 300.0  # a peer that lists what it cannot serve is ignored for it
MAX_DISCREDITED_LISTINGS = 10_000

# Peer transfer
MAX_INFLIGHT_BYTES_PER_PEER = 16 * MIB
MAX_INFLIGHT_BYTES_TOTAL = 32 * MIB
MAX_WINDOW_REQUESTS = 16
MAX_WINDOW_CHUNKS = 1024  # small chunks in flight per peer (they travel in batches, see below)
WINDOW_CAP_BYTES = 4 * MIB  # a peer's window may hold this many bytes of small chunks...
INITIAL_WINDOW_BYTES = 256 * KIB  # ...and starts with this many
MAX_BATCH_CHUNKS = 256  # chunks asked for in one batch request
MAX_BATCH_BYTES = 1 * MIB  # bytes of one batch reply
BATCH_CHUNK_BYTES = 32 * KIB  # chunks at most this long travel in batches (small files)
FIND_CHUNKS_BATCH = (
    500  # chunk hashes looked up in the library in one query (SQLite allows 32,766 parameters)
)
MAX_OPEN_PART_FILES = 64  # descriptors one download keeps open (a folder may have 100,000 files)
MIN_WINDOW_REQUESTS = 1
INITIAL_WINDOW_REQUESTS = 4
MAX_PEER_FAILURES = 3
MAX_BAD_CHUNKS_PER_PEER = 2
ENDGAME_CHUNKS = 8
CHUNK_TIMEOUT_MIN_SECONDS = 3.0
CHUNK_TIMEOUT_INITIAL_SECONDS = 20.0
READ_IDLE_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0

# Replies the peer client reads (catalogues, manifests, chunks, error bodies)
MAX_REPLY_HEAD_BYTES = 16 * KIB  # status line and headers
MAX_ERROR_REPLY_BYTES = 64 * KIB  # the body of a reply other than 200
MAX_REPLY_BYTES_TOTAL = 320 * MIB  # held at once for all catalogue, manifest and error replies
INITIAL_REPLY_BUFFER_BYTES = 16 * KIB  # what a reply may hold before its bytes arrive; it doubles
REPLY_DEADLINE_BASE_SECONDS = 10.0  # a reply's grace before MIN_REPLY_BYTES_PER_SECOND counts
MIN_REPLY_BYTES_PER_SECOND = 64 * KIB  # a slower reply (on average since its request) is cut
RESUME_RECORD_INTERVAL_SECONDS = 0.5

# Peer server connections and requests
MAX_CONNECTIONS_TOTAL = 512
MAX_CONNECTIONS_PER_PEER = 32  # one address's share: it takes 16 addresses to fill every slot
# The other side: connections (one request under way each) this process opens to one peer's
# server at once, over every download, catalogue and manifest fetch; further requests wait for
# one to end. Below MAX_CONNECTIONS_PER_PEER, beyond which the server closes newcomers from our
# address: half of it leaves room for a second process on the same address (a standalone get
# beside the daemon) and for connections closed here that the server has not yet seen close.
MAX_CONNECTIONS_TO_PEER = MAX_CONNECTIONS_PER_PEER // 2
REQUEST_TIMEOUT_SECONDS = 10.0  # from connecting, or from the last reply, to the next request
# TLS handshakes under way at once (each holds a 256 KiB buffer of asyncio's until it ends), in
# all and from one address (as many as it may hold connections); a handshake not done within
# REQUEST_TIMEOUT_SECONDS is cut.
MAX_TLS_HANDSHAKES_TOTAL = 128
MAX_TLS_HANDSHAKES_PER_PEER = MAX_CONNECTIONS_PER_PEER
KEEPALIVE_TIMEOUT_SECONDS = 15.0
MAX_HEADER_LINE_BYTES = 8190
MAX_HEADER_FIELD_BYTES = 8190
REQUESTS_PER_SECOND_PER_PEER = 5000.0
REQUEST_BURST_PER_PEER = 10000.0

# Discovery datagrams per source address
DATAGRAMS_PER_SECOND_PER_SOURCE = 200.0
DATAGRAM_BURST_PER_SOURCE = 400.0

# Transfer log
MAX_TRANSFER_LOG_ROWS = 200_000  # oldest dropped beyond this (a row is about 150 bytes)
REFUSAL_WINDOW_SECONDS = 10.0  # the same refusal (peer, content, result) again: one row, counted
MAX_REFUSAL_KEYS = 4096  # refusals being counted at once (memory); beyond, rows are written

# Shared files
REFRESH_RETRY_SECONDS = 2.0  # a shared file still being written is hashed again after this

# LocalSend (a bridge at the edge: phones and laptops running LocalSend)
MAX_LOCALSEND_JSON_BYTES = 1 * MIB  # a register or prepare-upload body
MAX_LOCALSEND_FILES = 10_000  # files one prepare-upload may offer
MAX_LOCALSEND_OFFER_BYTES = 1 << 44  # an offer's files together (and never over the free space)
MAX_LOCALSEND_SESSIONS = 16  # offers pending or uploading at once (several senders)
MAX_LOCALSEND_DEVICES = 256  # LocalSend devices remembered from their announcements
LOCALSEND_DECISION_SECONDS = 60.0  # an offer waiting for `inbox accept` is refused after this
LOCALSEND_SESSION_IDLE_SECONDS = 120.0  # an accepted session with no upload for this long ends
LOCALSEND_UPLOAD_IDLE_SECONDS = 30.0  # an upload with no byte for this long ends its session
MAX_LOCALSEND_PIN_FAILURES = 5  # wrong PINs from one address in a window: then 429 for all
LOCALSEND_PIN_WINDOW_SECONDS = 60.0
LOCALSEND_ANSWER_GAP_SECONDS = 5.0  # an announcer's address is answered at most this often
MAX_LOCALSEND_ANSWERS_IN_FLIGHT = 16  # answers (register requests) under way at once
