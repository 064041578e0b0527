"""localstripe on 127.0.0.1 for the Stripe gateway tests (its own CLI binds every interface).

Prints the port it listens on, then serves until killed. Adds, for the tests only:
- GET /_config/requests: every POST it received (path and Idempotency-Key), since localstripe
  itself ignores idempotency keys;
- `return_url` on a PaymentIntent, taken as Stripe takes it (localstripe refuses it), and
  GET /_config/return_urls: every one received;
- `setup_future_usage` and `off_session` on a PaymentIntent (a card kept for later, a payment
  without the customer), taken as Stripe takes them, and GET /_config/stored_credentials: what
  each PaymentIntent creation said of them;
- a card PaymentMethod without `cvc` (a saved card's later payments), which Stripe takes and
  localstripe refuses: counted in GET /_config/stored_credentials' `without_cvc`;
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


def _init_taking_return_url(self, *args, return_url=None, setup_future_usage=None, **kwargs):
    if return_url is not None:
        return_urls.append(return_url)
    if setup_future_usage not in (None, 'on_session', 'off_session'):
        raise resources.UserError(400, 'Bad request')
    _intent_init(self, *args, **kwargs)


resources.PaymentIntent.__init__ = _init_taking_return_url

# Stripe takes a card without its CVC (the CVC is used once, by the first payment; a saved card's
# later payments have none). localstripe insists on one: give it a stand-in and count the calls.
without_cvc = []
_method_init = resources.PaymentMethod.__init__


def _init_taking_no_cvc(self, *args, type=None, card=None, **kwargs):
    if type == 'card' and isinstance(card, dict) and 'cvc' not in card:
        without_cvc.append(card.get('number', '')[-4:])
        card = dict(card, cvc='000')
    _method_init(self, *args, type=type, card=card, **kwargs)


resources.PaymentMethod.__init__ = _init_taking_no_cvc

import localstripe.server as server  # noqa: E402

seen = []


@web.middleware
async def record(request, handler):
    if request.method == 'POST' and request.path.startswith('/v1/'):
        seen.append({'path': request.path, 'key': request.headers.get('Idempotency-Key')})
        if request.path in ('/v1/payment_intents', '/v1/refunds'):
            data = await request.post()
            if request.path == '/v1/payment_intents':
                # (localstripe takes `off_session` itself, before the PaymentIntent is made.)
                stored_credentials.append({
                    'strongroom_intent': data.get('metadata[strongroom_intent]'),
                    'setup_future_usage': data.get('setup_future_usage'),
                    'off_session': data.get('off_session') == 'true',
                })
            if data.get('amount') == '1313':
                await asyncio.sleep(6)
    return await handler(request)


async def requests(request):
    return web.json_response(seen)


async def sent_return_urls(request):
    return web.json_response(return_urls)


async def sent_stored_credentials(request):
    return web.json_response({'intents': stored_credentials, 'without_cvc': len(without_cvc)})


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
