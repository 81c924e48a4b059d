"""Chunk Uploader: one connection at a time; recv(1024) a JSON request, send the raw bytes of
the file of that name (relative to the working directory, unchecked), close.

Usage: python uploader.py UPLOAD_IP PORT
"""

import datetime
import json
import os
import socket
import sys

upload_ip, port = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((upload_ip, port))
server.listen(5)
print("listening", flush=True)
while True:
    conn, address = server.accept()
    request = json.loads(conn.recv(1024).decode())
    filename = request["requested_content"]
    if os.path.exists(filename):
        with open(filename, "rb") as f:
            conn.sendall(f.read())
        with open("Upload_log.txt", "a") as log:
            now = datetime.datetime.now().strftime("%d-%m-%Y %H:%M:%S")
            log.write(f"{filename} | {address[0]} | {now}\n")
    else:
        print("file not found:", filename, flush=True)
    conn.close()
