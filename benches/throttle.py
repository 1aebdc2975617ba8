# A TCP proxy on 127.0.0.1:PORT -> 127.0.0.1:5000 whose client->server bytes share one
# token bucket of RATE bytes/s: a registry behind a WAN uplink, for benches/assemble.sh.
#   python3 benches/throttle.py RATE PORT
import asyncio, sys, time
RATE = float(sys.argv[1])
PORT = int(sys.argv[2])
state = {"t": time.monotonic(), "debt": 0.0}
async def take(n):
    now = time.monotonic()
    state["debt"] = max(0.0, state["debt"] - (now - state["t"]) * RATE) + n
    state["t"] = now
    wait = state["debt"] / RATE
    if wait > 0.002:
        await asyncio.sleep(wait)
async def pipe(r, w, limit):
    try:
        while True:
            b = await r.read(65536)
            if not b: break
            if limit: await take(len(b))
            w.write(b); await w.drain()
    except Exception: pass
    finally:
        try: w.close()
        except Exception: pass
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", 5000)
    await asyncio.gather(pipe(cr, sw, True), pipe(sr, cw, False))
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", PORT)
    async with s: await s.serve_forever()
asyncio.run(main())
