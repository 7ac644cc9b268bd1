"""A small consumer service, the subject of the example tests in ``test_billing.py``.

It handles payments (JSON ``{"order": "...", "amount": 12}``) and sends a receipt for each,
keyed by order, through a client proxy. A payment it cannot take raises: the library retries it
(``maxRetry=2``) and then writes it to ``payments-dlq``.
"""

from __future__ import annotations

import json
from pathlib import Path

import trpc_kafka
from trpc_kafka import ConsumerMessage, Context, Server

CONFIG = Path(__file__).resolve().parent / "trpc_python.yaml"


def build_server(config: str | Path = CONFIG) -> Server:
    """The billing server of ``config``, its handler registered."""
    server = trpc_kafka.new_server(config)
    receipts = trpc_kafka.new_client_proxy("trpc.shop.billing.receipts")

    async def handle_payment(ctx: Context, msg: ConsumerMessage) -> None:
        payment = json.loads(msg.value or b"{}")
        if payment.get("amount", 0) <= 0:
            raise ValueError(f"amount must be positive, got {payment.get('amount')!r}")
        receipt = json.dumps({"order": payment["order"], "paid": payment["amount"]})
        # The request's metadata (trpcMeta) travels on with the receipt.
        await receipts.send_message("receipts", payment["order"], receipt)

    trpc_kafka.register_kafka_handler_service(
        server.service("trpc.shop.billing.payments"), handle_payment
    )
    server.add_shutdown_hook(receipts.close)
    return server
