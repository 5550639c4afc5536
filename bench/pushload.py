"""Load for the push benchmarks, one process: POSTs as fast as ``--concurrency`` allows, or at
``--rate`` per second; prints one JSON line of results.

  api URL   the push API: NotifyIncomingCall to user u0..u{users-1}
  bare URL  pnmediator-shaped pushes straight to URL (the stand-in): the ceiling
"""

import argparse
import json
import time

import httpx
import trio


def body(mode: str, i: int, users: int) -> dict:
    if mode == "api":
        return {"username": f"u{i % users}", "verb": "NotifyIncomingCall", "id": f"call-{i}"}
    return {"verb": "NotifyIncomingCall", "AppId": "com.cloudsoftphone.app.pushkit",
            "DeviceToken": f"token{i}", "Selector": f"S{i}", "Id": f"call-{i}"}


async def main(args: argparse.Namespace) -> None:
    latencies: list[float] = []
    errors = 0
    counter = 0
    headers = {"Authorization": f"Bearer {args.key}"} if args.mode == "api" else {}
    url = args.url + "/api/v1/push" if args.mode == "api" else args.url
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10, headers=headers) as client:
        end = time.perf_counter() + args.seconds

        async def one(i: int) -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                answer = await client.post(url, json=body(args.mode, i, args.users))
                ok = answer.status_code == 200
                if ok and args.mode == "api":
                    ok = all(d["outcome"] == "sent" for d in answer.json()["devices"])
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - began)
            errors += not ok

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < end:
                counter += 1
                await one(counter)

        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if args.rate:
                next_at = began
                while next_at < end:
                    counter += 1
                    nursery.start_soon(one, counter)
                    next_at += 1 / args.rate
                    await trio.sleep_until(trio.current_time() + max(0, next_at - time.perf_counter()))
            else:
                for _ in range(args.concurrency):
                    nursery.start_soon(worker)
        elapsed = time.perf_counter() - began
    latencies.sort()
    print(json.dumps({
        "requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["api", "bare"])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, help="requests per second (open loop)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--key", default="")
    trio.run(main, parser.parse_args())
