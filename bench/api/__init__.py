"""Device-list API benchmark: filtered `GET /api/v1/devices` at fixed concurrency beside `/healthz`.

    python -m bench.api [--devices 100000] [--concurrency 32] [--duration 10] [--server-processes 1]
"""
