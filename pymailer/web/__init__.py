"""
The web side (issue 16): one listener on twisted.web with Klein routes.

  - L{app}: the routes and the listener builders;
  - L{site}: security headers on every response, connection tracking;
  - L{autoconfig}: Thunderbird autoconfig and Outlook Autodiscover;
  - L{mtasts}: the MTA-STS policy (RFC 8461) and its DNS records;
  - L{metrics}: C{/metrics} for Prometheus;
  - L{admin}, L{account}, L{monitoring}: the login and the pages;
    L{api}: the same as JSON; L{operations}: what both do;
  - L{sessions}: the sessions every process shares (SQLite);
  - L{plainhttp}: the plain HTTP listener (redirects to HTTPS).
"""
