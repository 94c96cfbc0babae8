"""hub_client: the Python SDK of hub.

::

    async with hub_client.connect("ws://127.0.0.1:8765") as client:
        async with client.subscribe("chat.*") as subscription:
            await client.publish("chat.room1", {"text": "hi"})
            async for message in subscription:
                print(message.topic, message.data)

From synchronous code, :mod:`hub_client.sync` runs the same client on a background thread::

    with hub_client.sync.connect("ws://127.0.0.1:8765") as client:
        client.publish("chat.room1", {"text": "hi"})

See :mod:`hub_client.client` for how the client behaves across reconnects, and
docs/client.md for the guide.
"""

from hub.exceptions import (
    ClientError,
    Disconnected,
    HubError,
    NotRecovered,
    RequestError,
    RequestTimeout,
    SubscriptionNotice,
    Undeliverable,
)
from hub_client.client import Client, ConnectionState, HistoryPage, connect
from hub_client.reconnect import Backoff
from hub_client.subscription import Message, PresenceEvent, PresenceMember, Subscription
from hub_client.sync import SyncClient, SyncSubscription

__all__ = [
    "Backoff",
    "Client",
    "ClientError",
    "ConnectionState",
    "Disconnected",
    "HistoryPage",
    "HubError",
    "Message",
    "NotRecovered",
    "PresenceEvent",
    "PresenceMember",
    "RequestError",
    "RequestTimeout",
    "Subscription",
    "SubscriptionNotice",
    "SyncClient",
    "SyncSubscription",
    "Undeliverable",
    "connect",
]
