"""localstripe on 127.0.0.1 for the Stripe gateway tests (its own CLI binds every interface).

Prints the port it listens on, then serves until killed. Adds, for the tests only:
- GET /_config/requests: every POST it received (path and Idempotency-Key), since localstripe
  itself ignores idempotency keys;
- `return_url` on a PaymentIntent, taken as Stripe takes it (localstripe refuses it), and
  GET /_config/return_urls: every one received;
- `setup_future_usage` and `off_session` on a PaymentIntent (a card kept for later, a payment
  without the customer), taken as Stripe takes them, and GET /_config/stored_credentials: what
  each PaymentIntent creation said of them;
- a payment intent or refund of amount 1313 is answered after 6 s (to leave strongroom's intent
  processing, or its refund pending).
Its store is kept in memory only (localstripe pickles to a shared /tmp file otherwise).
"""
import asyncio
import socket

from aiohttp import web

import localstripe.resources as resources

resources.Store.dump_to_disk = lambda self: None

# Stripe takes `return_url` with a confirmation (where the customer's browser goes after 3-D
# Secure); localstripe refuses it as an unexpected field. Take it as Stripe does and record it,
# so the tests can check what strongroom sent.
return_urls = []
_intent_init = resources.PaymentIntent.__init__


stored_credentials = []


def _init_taking_return_url(self, *args, return_url=None, setup_future_usage=None, off_session=None, **kwargs):
    if return_url is not None:
        return_urls.append(return_url)
    if setup_future_usage not in (None, 'on_session', 'off_session'):
        raise resources.UserError(400, 'Bad request')
    if off_session not in (None, 'true', 'false', True, False):
        raise resources.UserError(400, 'Bad request')
    stored_credentials.append({
        'metadata': kwargs.get('metadata'),
        'setup_future_usage': setup_future_usage,
        'off_session': off_session in ('true', True),
    })
    _intent_init(self, *args, **kwargs)


resources.PaymentIntent.__init__ = _init_taking_return_url

import localstripe.server as server  # noqa: E402

seen = []


@web.middleware
async def record(request, handler):
    if request.method == 'POST' and request.path.startswith('/v1/'):
        seen.append({'path': request.path, 'key': request.headers.get('Idempotency-Key')})
        if request.path in ('/v1/payment_intents', '/v1/refunds'):
            data = await request.post()
            if data.get('amount') == '1313':
                await asyncio.sleep(6)
    return await handler(request)


async def requests(request):
    return web.json_response(seen)


async def sent_return_urls(request):
    return web.json_response(return_urls)


async def sent_stored_credentials(request):
    return web.json_response(stored_credentials)


server.app.middlewares.append(record)
server.app.router.add_get('/_config/requests', requests)
server.app.router.add_get('/_config/return_urls', sent_return_urls)
server.app.router.add_get('/_config/stored_credentials', sent_stored_credentials)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(('127.0.0.1', 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, print=None, access_log=None)
