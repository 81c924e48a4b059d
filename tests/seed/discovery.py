"""Content Discovery: hear announcements on PORT and record, per chunk name, the source IPs in
The_Content_Dictionary.txt. Dies (for good) on a datagram that is not JSON with "chunks".

Usage: python discovery.py PORT
"""

import json
import os
import socket
import sys

port = int(sys.argv[1])
if not os.path.exists("The_Content_Dictionary.txt"):
    with open("The_Content_Dictionary.txt", "w") as f:
        json.dump({}, f)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("0.0.0.0", port))
print("listening", flush=True)
while True:
    message, address = sock.recvfrom(1024)
    data = json.loads(message.decode())
    with open("The_Content_Dictionary.txt", "r+") as f:
        dictionary = json.load(f)
        for chunk in data["chunks"]:
            if chunk in dictionary:
                if address[0] in dictionary[chunk]:
                    continue
                dictionary[chunk].append(address[0])
            else:
                dictionary[chunk] = [address[0]]
        f.seek(0)
        f.truncate()
        json.dump(dictionary, f)
