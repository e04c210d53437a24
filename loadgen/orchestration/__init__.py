"""Locust orchestration: the agent engine under Locust users, shapes and master/workers.

The only layer that imports Locust or gevent; the engine below it is plain asyncio.
"""
