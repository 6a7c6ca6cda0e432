"""
The web side (issue 16): one listener on twisted.web with Klein routes.

  - L{app}: the routes and the listener builders;
  - L{site}: security headers on every response, connection tracking;
  - L{autoconfig}: Thunderbird autoconfig and Outlook Autodiscover;
  - L{mtasts}: the MTA-STS policy (RFC 8461) and its DNS records;
  - L{metrics}: C{/metrics} for Prometheus.
"""
