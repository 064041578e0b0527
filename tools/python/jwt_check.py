"""Verifies a strongroom access token with PyJWT against the published JWK set (independent of our
code): prints the claims as JSON, or "invalid: <reason>".

    python jwt_check.py TOKEN JWKS_JSON ISSUER AUDIENCE
"""
import json
import sys

import jwt
from jwt.algorithms import OKPAlgorithm

token, jwks, issuer, audience = sys.argv[1:5]
header = jwt.get_unverified_header(token)
keys = {k["kid"]: k for k in json.loads(jwks)["keys"]}
try:
    key = OKPAlgorithm.from_jwk(json.dumps(keys[header["kid"]]))
    claims = jwt.decode(token, key=key, algorithms=["EdDSA"], audience=audience, issuer=issuer,
                        options={"require": ["exp", "nbf", "iat", "sub", "aud", "iss"]})
    assert header["typ"] == "at+jwt", header
    print(json.dumps(claims))
except Exception as e:  # any failure is reported, not raised
    print(f"invalid: {type(e).__name__}")
