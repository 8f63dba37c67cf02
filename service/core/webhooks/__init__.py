"""Webhook notifications: a signed JSON POST when a job or an experiment finishes.

- **The field.** A job spec and an experiment spec may carry ``webhook_url``. Its shape
  (http or https, at most ``MAX_WEBHOOK_URL`` characters, no ``user:password@``) is part of the
  contract (``service.core.contract.urls.url_problem``); at submit time the API also resolves its
  host and refuses it when an address is internal (:mod:`.guard`: ``check_url``, called by
  ``resolve_spec`` and the experiment's create): loopback, link-local (169.254.0.0/16 and
  fe80::/10, where cloud metadata answers), private, shared or reserved (anything not globally
  routable), or one of this machine's own addresses, unless the address is inside a network of
  ``CHILDTUNE_WEBHOOK_ALLOW_NETWORKS``. Unspecified and multicast addresses are never allowed.
- **Due.** The status change to a final one (``Store.transition``'s script) and the first close
  of an experiment (``Store.close_experiment``) add the job or experiment id to the due set in
  the same atomic step, so no path to a final status can finish without its notification.
- **Delivery** (:mod:`.delivery`). Every worker runs a ``DeliveryLoop`` thread (started by its
  heartbeat thread, apart from it: a slow receiver never delays a heartbeat). It claims each due
  notification for one attempt (``Store.claim_webhook``: one worker at a time, and a worker that
  dies mid-attempt leaves it due again after the claim's lease), builds the event from the final
  record on the first attempt and keeps that body for the retries, checks the URL's addresses
  again (DNS may have changed; a refused address is a failed attempt, never a request), and
  POSTs to the address it checked (no second lookup), with ``follow_redirects=False`` and a
  timeout of ``CHILDTUNE_WEBHOOK_TIMEOUT_S``. A 2xx answer delivers it; anything else is retried
  after ``base * 2**(attempt - 1)`` seconds (capped at ``RETRY_CAP_S``) while within
  ``CHILDTUNE_WEBHOOK_RETRY_WINDOW_S`` of the event, then given up. Each attempt is recorded in
  the delivery (``GET /v1/webhooks/deliveries``) and, for a job, in its events stream.
- **Signature** (:mod:`.signing`). ``Childtune-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256
  of "<t>.<body>">`` under the tenant's secret (``GET /v1/webhooks/secret``); ``t`` is the
  attempt's time.

The modules by job: ``guard`` (where a webhook may go), ``signing`` (the signature and the header
names), ``delivery`` (the event's body, one attempt, the worker's ``DeliveryLoop``). Import each
name from the module that owns it; this file re-exports nothing, so that the API's submit-time
check (``guard``) does not load the delivery side. ``delivery`` sits above the store, the
experiments and the job directory; nothing of the contract, records, store, experiments,
settings or queue imports this package.
"""
