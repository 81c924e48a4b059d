"""Chunk Downloader: for NAME_1..NAME_5, try each IP the dictionary lists on PORT, keep what one
recv(262144) returns (any reply counts as success), then join the chunks into NAME.png.

Usage: python downloader.py NAME PORT [BIND_IP]
"""

import datetime
import json
import os
import socket
import sys
import time

name, port = sys.argv[1], int(sys.argv[2])
bind_ip = sys.argv[3] if len(sys.argv) > 3 else None
for path, empty in (
    ("The_Content_Dictionary.txt", {}),
    ("Download_Log.txt", {}),
    ("Available_Chunks.txt", {"chunks": []}),
):
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump(empty, f)
with open("The_Content_Dictionary.txt") as f:
    dictionary = json.load(f)

for i in range(1, 6):
    chunk = f"{name}_{i}"
    downloaded = False
    for ip in dictionary.get(chunk, []):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if bind_ip:
                sock.bind((bind_ip, 0))
            sock.settimeout(5)
            sock.connect((ip, port))
            sock.send(json.dumps({"requested_content": chunk}).encode())
            data = sock.recv(262144)
            sock.close()
        except (TimeoutError, ConnectionRefusedError, OSError):
            continue
        with open(chunk, "wb") as f:
            f.write(data)
        now = datetime.datetime.now().strftime("%d-%m-%Y %H:%M:%S")
        with open("Download_Log.txt", "a") as log:
            log.write(json.dumps(f"{time.time()} | {chunk} | {ip} | {now}") + "\n")
        downloaded = True
        break
    if not downloaded:
        print(f"could not download {chunk}", flush=True)
        sys.exit(1)

with open(name + ".png", "wb") as out:
    for i in range(1, 6):
        with open(f"{name}_{i}", "rb") as f:
            out.write(f.read())
with open("Available_Chunks.txt") as f:
    available = json.load(f)
available["chunks"] += [f"{name}_{i}" for i in range(1, 6)]
with open("Available_Chunks.txt", "w") as f:
    json.dump(available, f)
print("downloaded", name + ".png", flush=True)
