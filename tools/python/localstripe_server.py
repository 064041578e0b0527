"""localstripe on 127.0.0.1 for the Stripe gateway tests (its own CLI binds every interface).

Prints the port it listens on, then serves until killed. Adds, for the tests only:
- GET /_config/requests: every POST it received (path and Idempotency-Key), since localstripe
  itself ignores idempotency keys;
- `return_url` on a PaymentIntent, taken as Stripe takes it (localstripe refuses it), and
  GET /_config/return_urls: every one received;
- `setup_future_usage` and `off_session` on a PaymentIntent (a card kept for later, a payment
  without the customer), taken as Stripe takes them, and GET /_config/stored_credentials: what
  each PaymentIntent creation said of them (and its `customer` and `payment_method`);
- Stripe's rules for a kept card: a PaymentIntent with `setup_future_usage` and a Customer
  attaches its PaymentMethod to that Customer (and shows `setup_future_usage`); a PaymentMethod
  used once already may be used again only as its Customer's (Stripe refuses the reuse of a
  PaymentMethod that was not attached);
- `payment_method_details.card.network_transaction_id` on a successful charge (15 digits, as
  Visa's), which localstripe leaves out;
- a card PaymentMethod without `cvc` (a saved card's later payments), which Stripe takes and
  localstripe refuses: counted in GET /_config/stored_credentials' `without_cvc`;
- a payment intent or refund of amount 1313 is answered after 6 s (to leave strongroom's intent
  processing, or its refund pending);
- a refund of amount 1414 is made `pending` (as Stripe answers a refund it has not settled yet),
  until POST /_config/settle_refunds makes every pending refund `succeeded`;
- Stripe's idempotency, which localstripe lacks: a POST whose Idempotency-Key was seen answers the
  first answer (status and body, `Idempotent-Replayed: true`) and does nothing; while the first is
  in flight, 409. GET /_config/effects says how often each key acted (never more than once) and
  lists the PaymentIntents with their strongroom metadata and status (the crash test counts
  charges there);
- GET /v1/payment_intents/search?query=metadata['strongroom_intent']:'pi_…' (Stripe's search,
  which strongroom's reconciliation asks; only this form of query).
Its store is kept in memory only (localstripe pickles to a shared /tmp file otherwise).
"""
import asyncio
import re
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


used_methods = set()


def _init_taking_return_url(self, *args, return_url=None, setup_future_usage=None, **kwargs):
    if return_url is not None:
        return_urls.append(return_url)
    if setup_future_usage not in (None, 'on_session', 'off_session'):
        raise resources.UserError(400, 'Bad request')
    method_id, customer = kwargs.get('payment_method'), kwargs.get('customer')
    if method_id in used_methods:
        method = resources.PaymentMethod._api_retrieve(method_id)
        if method.customer is None or method.customer != customer:
            raise resources.UserError(400, 'The provided PaymentMethod was previously used with a PaymentIntent '
                                           'without Customer attachment, or belongs to another Customer.')
    _intent_init(self, *args, **kwargs)
    self.setup_future_usage = setup_future_usage
    if method_id:
        used_methods.add(method_id)
        if setup_future_usage and customer:
            resources.PaymentMethod._api_retrieve(method_id).customer = customer

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

# Stripe answers some refunds `pending` and settles them later; localstripe settles every refund
# at once. A refund of 14.14 stays pending until the test settles it.
_refund_init = resources.Refund.__init__


def _init_pending_for_1414(self, *args, **kwargs):
    _refund_init(self, *args, **kwargs)
    if self.amount == 1414:
        self.status = 'pending'


resources.Refund.__init__ = _init_pending_for_1414

# Stripe reports the network's id of a card authorisation on the charge; localstripe does not.
_initialize_charge = resources.Charge._initialize_charge


def _initialize_charge_with_network_id(self, *args, **kwargs):
    _initialize_charge(self, *args, **kwargs)
    if self.status == 'succeeded':
        digits = str(int.from_bytes(self.id.encode(), 'big') % 10 ** 15).zfill(15)
        self.payment_method_details = {'type': 'card', 'card': {'network_transaction_id': digits}}


resources.Charge._initialize_charge = _initialize_charge_with_network_id

import localstripe.server as server  # noqa: E402

seen = []
idempotent = {}  # Idempotency-Key -> None while in flight, then (status, body bytes)
acted = {}  # Idempotency-Key -> how many times a call under it ran


def _stripe_error(status, message):
    return web.json_response({'error': {'type': 'idempotency_error' if status == 409 else 'invalid_request_error',
                                        'message': message}}, status=status)


def search_payment_intents(request):
    if not request.headers.get('Authorization', '').startswith('Bearer sk_'):
        return _stripe_error(401, 'no API key')
    match = re.fullmatch(r"metadata\['(\w+)'\]:'([^']*)'", request.query.get('query', ''))
    if not match:
        return _stripe_error(400, 'this stand-in searches by one metadata field only')
    name, value = match.groups()
    found = [obj for key, obj in resources.store.items()
             if key.startswith('payment_intent:') and (obj.metadata or {}).get(name) == value]
    found.sort(key=lambda pi: pi.created, reverse=True)
    return server.json_response({'object': 'search_result', 'url': '/v1/payment_intents/search',
                                 'has_more': False, 'data': [pi._export() for pi in found]})


@web.middleware
async def idempotency(request, handler):
    if request.method == 'GET' and request.path == '/v1/payment_intents/search':
        return search_payment_intents(request)
    key = request.headers.get('Idempotency-Key')
    if request.method != 'POST' or not key or not request.path.startswith('/v1/'):
        return await handler(request)
    if key in idempotent:
        first = idempotent[key]
        if first is None:
            return _stripe_error(409, 'a request with this Idempotency-Key is still being processed')
        status, body = first
        return web.Response(status=status, body=body, content_type='application/json',
                            headers={'Idempotent-Replayed': 'true'})
    idempotent[key] = None
    acted[key] = acted.get(key, 0) + 1
    try:
        response = await handler(request)
    except BaseException:
        del idempotent[key]
        raise
    if response.status >= 500 or response.body is None:
        del idempotent[key]  # Stripe does not keep the answer of a failure of its own
    else:
        idempotent[key] = (response.status, bytes(response.body))
    return response


async def effects(request):
    intents = [{'id': obj.id, 'status': obj.status, 'amount': obj.amount,
                'strongroom_intent': (obj.metadata or {}).get('strongroom_intent'),
                'strongroom_key': (obj.metadata or {}).get('strongroom_key')}
               for key, obj in resources.store.items() if key.startswith('payment_intent:')]
    return web.json_response({'acted': acted, 'payment_intents': intents})


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
                    'customer': data.get('customer'),
                    'payment_method': data.get('payment_method'),
                })
            if data.get('amount') == '1313':
                await asyncio.sleep(6)
    return await handler(request)


async def requests(request):
    return web.json_response(seen)


async def settle_refunds(request):
    settled = 0
    for key, obj in resources.store.items():
        if key.startswith('refund:') and obj.status == 'pending':
            obj.status = 'succeeded'
            settled += 1
    return web.json_response({'settled': settled})


async def sent_return_urls(request):
    return web.json_response(return_urls)


async def sent_stored_credentials(request):
    return web.json_response({'intents': stored_credentials, 'without_cvc': len(without_cvc)})


server.app.middlewares.insert(0, idempotency)
server.app.middlewares.append(record)
server.app.router.add_get('/_config/effects', effects)
server.app.router.add_get('/_config/requests', requests)
server.app.router.add_post('/_config/settle_refunds', settle_refunds)
server.app.router.add_get('/_config/return_urls', sent_return_urls)
server.app.router.add_get('/_config/stored_credentials', sent_stored_credentials)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(('127.0.0.1', 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, print=None, access_log=None)
