"""The systemd side of sd_notify for the tests: a datagram socket that collects the messages."""

from __future__ import annotations

import socket
import time


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket that collects the messages."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(message)
        return message

    def wait_for(self, key: str, value: str = "1", timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message.get(key) == value:
                return message
        raise AssertionError(f"no {key}={value} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
