"""Chunk Announcer: split NAME.png into NAME_1..NAME_5, list them in Available_Chunks.txt,
broadcast that file's JSON every INTERVAL seconds.

Usage: python announcer.py NAME BIND_IP BROADCAST_IP PORT INTERVAL
"""

import json
import math
import os
import socket
import sys
import time

name, bind_ip, broadcast_ip, port, interval = sys.argv[1:6]
port, interval = int(port), float(interval)

with open(name + ".png", "rb") as f:
    content = f.read()
chunk_size = math.ceil(len(content) / 5)
available = []
for i in range(5):
    piece = content[i * chunk_size : (i + 1) * chunk_size]
    if not piece:
        break
    chunk_name = f"{name}_{i + 1}"
    with open(chunk_name, "wb") as f:
        f.write(piece)
    available.append(chunk_name)

if not os.path.exists("Available_Chunks.txt"):
    with open("Available_Chunks.txt", "w") as f:
        json.dump({"chunks": []}, f)
with open("Available_Chunks.txt") as f:
    data = json.load(f)
for chunk_name in available:
    if chunk_name not in data["chunks"]:
        data["chunks"].append(chunk_name)
with open("Available_Chunks.txt", "w") as f:
    json.dump(data, f)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.bind((bind_ip, 0))
while True:
    with open("Available_Chunks.txt") as f:
        message = f.read()
    sock.sendto(message.encode(), (broadcast_ip, port))
    time.sleep(interval)
