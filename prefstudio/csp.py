"""The Content-Security-Policy header on every response (``settings.CONTENT_SECURITY_POLICY``).

A middleware of a few lines rather than django-csp: the policy is one fixed string with no nonces (every
script is a static file), so there is nothing per-request to compute. Django 6 builds CSP in; this goes
when the project moves to it. An empty setting sends no header.
"""

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
