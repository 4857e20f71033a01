"""The plugin's queues, namespaced (declared to the host by ``plugin.crowdpower_queues``)."""

QUEUES = {"webhooks": "stripe.webhooks", "sync": "stripe.sync"}
