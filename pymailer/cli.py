"""
The C{pymailer} admin command: domains, users, aliases, the mail queue and
DKIM keys, plus C{check-config} and C{dns} (the DNS records a domain needs).

It changes the same SQLite accounts database the running server reads, so
changes apply at once, without a restart.  Run it as the user the server
runs as, so that files it creates stay readable by the server.

With C{[storage] backend = "postgresql"} the accounts and the queue are
in the shared database instead; C{db migrate} brings its schema up to date
(the server and the other commands refuse an older one, saying so), and
C{migrate-storage --to postgresql DSN} moves an embedded installation into
it (L{pymailer.pg.migrate_storage}).

C{import}, C{export maildir} and C{backup} move mail into and out of the
message store (L{pymailer.store.maildir_io}); they are safe while the
server runs.  C{mailbox list} shows what a mailbox holds, read through the
store's interfaces like any protocol (whatever the backend keeps on disk).

The C{queue} commands work on the server's queue through its
L{pymailer.interfaces.ISpool}, whose claims make them safe while the server
runs: a message being delivered at that moment is refused (try again),
and the server notices held, released, flushed or bounced mail on its next
queue scan, within seconds.

Passwords are read from the terminal (twice, no echo) or, with
C{--password-stdin}, as one line from standard input; never from the command
line, where any local user could read them in the process list.

Errors are one line, C{pymailer: error: ...}, exit status 1; usage errors
exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sqlite3
import sys
import time

from pymailer import config as configModule
from pymailer import doctor
from pymailer.auth.directory import (
    checkMailboxName, normaliseAddress, normaliseDomain, openDirectory)
from pymailer.auth.passwords import hashPassword
from pymailer.policy import dkimkeys, dnsrecords
from pymailer.policy.plugins import UnknownPolicy, checkPolicyNames
from pymailer.queue import model as queueModel
from pymailer.queue.backend import openSpool
from pymailer.queue.display import (
    age as _age, clean as _clean, envelopeLines as _envelopeLines, headerLines as _headerLines)
from pymailer.dns import Resolver
from pymailer.sizes import formatSize, parseSize
from pymailer.pg.schema import SchemaError
from pymailer.store import openStore

__all__ = ["main", "buildParser"]

PROG = "pymailer"


class CommandError(Exception):
    """An error to report as one line and exit 1."""


def _message(e):
    """One line from an exception (KeyError's str() adds quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(text).split())


# --- helpers ---------------------------------------------------------------

def _readPassword(args):
    """
    @return: the new password, from stdin (C{--password-stdin}) or the
        terminal.
    @raise CommandError: empty, mismatched, or no input.
    """
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password (again): ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError("no password entered") from None
        if password != again:
            raise CommandError("passwords do not match")
    if not password:
        raise CommandError("empty password refused")
    return password


# --- commands --------------------------------------------------------------

def cmdCheckConfig(args, config, out):
    try:
        checkPolicyNames(config)
    except UnknownPolicy as e:
        raise CommandError(str(e))
    print(f"{config.source or 'embedded default'}: OK", file=out)


def cmdDomainAdd(args, config, out):
    directory = openDirectory(config)
    directory.addDomain(args.domain, catchAll=args.catch_all)
    name = normaliseDomain(args.domain)
    print(f"added domain {name}", file=out)


def cmdDomainList(args, config, out):
    directory = openDirectory(config)
    for domain in directory.listDomains():
        catchAll = directory.catchAll(domain)
        if catchAll:
            print(f"{domain} (catch-all: {catchAll})", file=out)
        else:
            print(domain, file=out)


def cmdDomainRemove(args, config, out):
    directory = openDirectory(config)
    directory.removeDomain(args.domain)
    print(f"removed domain {normaliseDomain(args.domain)} with its users and"
          " aliases (mail on disk is kept)", file=out)


def cmdUserAdd(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    # Fail before asking for a password that would be thrown away.
    checkMailboxName(address)
    domain = address.rpartition("@")[2]
    if not directory.hasDomain(domain):
        raise CommandError(f"no such domain: {domain}"
                           f" (add it with: pymailer domain add {domain})")
    if directory.hasUser(address):
        raise CommandError(f"user exists: {address}")
    password = _readPassword(args)
    directory.addUser(address, hashPassword(password))
    if args.admin:
        directory.setAdmin(address)
    # INBOX, Sent, Drafts, Trash, Junk, Archive from the start: a client's
    # first LIST shows them and its first APPEND to Sent works.
    openStore(config).createUser(address)
    print(f"added user {address}" + (" (admin)" if args.admin else ""), file=out)


def cmdUserAdmin(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    directory.setAdmin(address, not args.off)
    state = "no longer an admin" if args.off else "an admin (may use the web admin pages)"
    print(f"{address} is {state}", file=out)


def cmdUserDisable(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    disable = args.action == "disable"
    directory.setDisabled(address, disable)
    state = ("disabled: may not log in; mail to it is still delivered" if disable
             else "enabled: may log in")
    print(f"{address} is {state}", file=out)


def cmdUserPasswd(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    if not directory.hasUser(address):
        raise CommandError(f"no such user: {address}")
    password = _readPassword(args)
    directory.setPasswordHash(address, hashPassword(password))
    print(f"changed password of {address}", file=out)


def cmdUserQuota(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    if args.size is None:  # show it
        if not directory.hasUser(address):
            raise CommandError(f"no such user: {address}")
        limit = directory.quota(address)
    elif args.size.strip().lower() == "none":
        limit = None
    else:
        try:
            limit = parseSize(args.size)
        except ValueError as e:
            raise CommandError(str(e)) from None
    if args.size is not None:
        directory.setQuota(address, limit)
    used = formatSize(openStore(config).usage(address))
    state = "no limit" if limit is None else f"a limit of {formatSize(limit)}"
    print(f"{address} has {state} ({used} used)", file=out)


def cmdUserList(args, config, out):
    directory = openDirectory(config)
    if args.domain is not None and not directory.hasDomain(args.domain):
        raise CommandError(f"no such domain: {args.domain}")
    store = None
    for address in directory.listUsers(args.domain):
        marks = [mark for mark, on in (("admin", directory.isAdmin(address)),
                                       ("disabled", directory.isDisabled(address))) if on]
        limit = directory.quota(address)
        if limit is not None:
            # The store only for users with a limit: a usage is a query.
            store = store or openStore(config)
            marks.append(f"{formatSize(store.usage(address))} of {formatSize(limit)} used")
        print(address + (f" ({', '.join(marks)})" if marks else ""), file=out)


def cmdUserRemove(args, config, out):
    directory = openDirectory(config)
    directory.removeUser(args.address)
    print(f"removed user {normaliseAddress(args.address)} (mail on disk is kept)",
          file=out)


def cmdAliasAdd(args, config, out):
    directory = openDirectory(config)
    directory.addAlias(args.alias, args.targets)
    alias = normaliseAddress(args.alias)
    print(f"{alias} -> {', '.join(directory.aliasTargets(alias))}", file=out)


def cmdAliasList(args, config, out):
    directory = openDirectory(config)
    for alias, targets in directory.listAliases():
        print(f"{alias} -> {', '.join(targets)}", file=out)


def cmdAliasRemove(args, config, out):
    directory = openDirectory(config)
    directory.removeAlias(args.alias, args.targets)
    alias = normaliseAddress(args.alias)
    remaining = directory.aliasTargets(alias)
    if remaining:
        print(f"{alias} -> {', '.join(remaining)}", file=out)
    else:
        print(f"removed alias {alias}", file=out)


# --- queue -----------------------------------------------------------------

# Header lines of the message shown by "queue show".
SHOW_HEADER_LINES = 40


def _openSpool(config):
    """
    The server's queue.  Never created here: a queue made by the wrong user
    (or under the wrong config) would break the server.
    """
    return openSpool(config, create=False)


def _localTime(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _summary(entry, now):
    """One line of "queue list"."""
    size = "-" if entry.size is None else str(entry.size)
    envelope = entry.envelope
    if envelope is None:
        return f"{entry.queueId}  {entry.state:<8}  {size:>9}  (unreadable envelope)"
    pending = envelope.pending()
    count = len(envelope.recipients)
    parts = [
        entry.queueId,
        f"{entry.state:<8}",
        f"{size:>9}",
        f"{_age(entry.age(now)):>6}",
        f"<{_clean(envelope.sender)}>",
        f"{count} rcpt" + ("" if count == 1 else "s")
        + (f" ({len(pending)} pending)" if len(pending) != count else ""),
    ]
    if entry.state == queueModel.DEFERRED:
        if entry.nextAttempt <= now:
            parts.append("retry: now")
        else:
            parts.append(f"retry: {_localTime(entry.nextAttempt)}"
                         f" (in {_age(entry.nextAttempt - now)})")
        if entry.lastError:
            parts.append(f"last error: {_clean(entry.lastError)}")
    if entry.holdReason:
        parts.append(f"held: {_clean(entry.holdReason)}")
    return "  ".join(parts)


def cmdQueueList(args, config, out):
    spool = _openSpool(config)
    entries = spool.listMessages()
    if not entries:
        print("queue is empty", file=out)
        return
    now = time.time()
    for entry in entries:
        print(_summary(entry, now), file=out)
    total = sum(e.size or 0 for e in entries)
    n = len(entries)
    print(f"-- {n} message{'' if n == 1 else 's'}, {total} bytes", file=out)


def cmdQueueShow(args, config, out):
    spool = _openSpool(config)
    entry = spool.show(args.id)
    print(f"queue id: {args.id}", file=out)
    print(f"state: {entry.state}", file=out)
    if entry.holdReason:
        print(f"held: {_clean(entry.holdReason)}", file=out)
    if entry.takeovers:
        print(f"takeovers in a row: {entry.takeovers} (deliveries that stopped"
              " without an outcome)", file=out)
    for line in _envelopeLines(entry):
        print(_clean(line), file=out)
    try:
        with spool.openData(args.id) as f:
            lines = _headerLines(f, SHOW_HEADER_LINES)
    except queueModel.NoSuchMessage:
        print("(no message data)", file=out)
        return
    print(f"headers (first {SHOW_HEADER_LINES} lines at most):", file=out)
    for line in lines:
        print(_clean(line.replace("\t", " " * 8)), file=out)


def cmdQueueFlush(args, config, out):
    spool = _openSpool(config)
    flushed = spool.flush(args.id)
    if args.id is not None:
        print(f"{args.id}: due now; the server retries it on its next queue"
              " scan", file=out)
    else:
        n = len(flushed)
        print(f"{n} deferred message{'' if n == 1 else 's'} due now", file=out)


def cmdQueueHold(args, config, out):
    spool = _openSpool(config)
    was = spool.hold(args.id)
    print(f"{args.id}: on hold (was {was})", file=out)


def cmdQueueRelease(args, config, out):
    spool = _openSpool(config)
    spool.unhold(args.id)
    print(f"{args.id}: released; the server delivers it on its next queue scan",
          file=out)


def cmdQueueDelete(args, config, out):
    spool = _openSpool(config)
    spool.delete(args.id)
    print(f"{args.id}: deleted", file=out)


def cmdQueueBounce(args, config, out):
    spool = _openSpool(config)
    envelope = spool.bounce(args.id)
    n = sum(1 for r in envelope.recipients
            if r.state == "failed" and r.lastError == queueModel.ADMIN_BOUNCE)
    to = (f"<{_clean(envelope.sender)}>" if envelope.sender
          else "nobody (null sender)")
    print(f"{args.id}: {n} recipient{'' if n == 1 else 's'} failed; the server"
          f" reports to {to} on its next queue scan", file=out)


# --- dkim and dns ----------------------------------------------------------

def cmdDkimKeygen(args, config, out):
    selector = args.selector or dkimkeys.defaultSelector()
    try:
        keys, where = dkimkeys.generateKeysFor(config, args.domain, selector,
                                               force=args.force)
    except dkimkeys.KeyExistsError as e:
        raise CommandError(f"{e} (choose another --selector, or --force to"
                           " replace it)") from None
    domain = dkimkeys.dnsDomain(args.domain)
    print(f"; DKIM keys for {domain} made in {where}; publish these records"
          " (the server signs with every key there):", file=out)
    for key in keys:
        print(dkimkeys.dnsRecord(domain, key), file=out)


def cmdDns(args, config, out):
    for line in dnsrecords.zoneRecords(config, args.domain):
        print(line, file=out)


def cmdDoctor(args, config, out):
    domains = [args.domain] if args.domain else openDirectory(config).listDomains()
    if not domains:
        raise CommandError("no domains yet: add one with 'pymailer domain add DOMAIN'")
    # Lookups are made here, blocking, so no reactor or thread pool is needed.
    report = doctor.diagnose(config, Resolver(config.dns, None, None), domains)
    for line in doctor.formatReport(report):
        print(line, file=out)
    return 0 if doctor.allGood(report) else 1


def cmdSpamStats(args, config, out):
    from pymailer.auth.directory import normaliseAddress
    from pymailer.spam.db import ClassifierDB, dbPath
    from pymailer.spam.stats import formatStats

    address = normaliseAddress(args.address) if args.address else None
    path = dbPath(config.data_dir)
    if not path.exists():
        print(f"no spam verdicts or training recorded yet in {config.data_dir}", file=out)
        return
    for line in formatStats(ClassifierDB(dbPath(config.data_dir)), address):
        print(line, file=out)


def _importingStore(config):
    from pymailer.interfaces import IMailImport

    store = openStore(config)
    if not IMailImport.providedBy(store):
        raise CommandError(f'[storage] backend = "{config.storage.backend}" cannot import:'
                           ' use backend = "sqlite"')
    return store


def cmdImport(args, config, out):
    from pymailer.store import maildir_io

    address = normaliseAddress(args.address)
    store = _importingStore(config)
    if args.format == "maildir":
        if not os.path.isdir(args.path):
            raise CommandError(f"{args.path}: not a directory")
        boxes = maildir_io.readMaildirTree(args.path)
    else:
        boxes = [maildir_io.readMbox(args.path)]
    for name, count in maildir_io.importMailboxes(store, address, boxes, args.folder):
        print(f"{address} {name}: {count} messages imported", file=out)


def cmdExport(args, config, out):
    from pymailer.store import maildir_io

    address = normaliseAddress(args.address)
    for name, count in maildir_io.exportMaildir(openStore(config), address, args.directory):
        print(f"{address} {name}: {count} messages exported", file=out)


# Octets of a message read for "mailbox list": its header block, usually.
LIST_HEADER_OCTETS = 64 * 1024


def _fromAndSubject(content):
    """C{(From, Subject)} of a message, decoded (RFC 2047), terminal-safe."""
    import email.parser
    import email.policy

    head = content.read(LIST_HEADER_OCTETS)
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0),
              default=len(head))
    try:
        fields = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            head[:end + 2], headersonly=True)
        return tuple(" ".join(_clean(fields.get(name, "")).split()) or "-"
                     for name in ("From", "Subject"))
    except Exception:  # a malformed field: still list the message
        return "?", "?"


def cmdMailboxList(args, config, out):
    address = normaliseAddress(args.address)
    # The store makes accounts on first access: never for a typo.
    if not openDirectory(config).hasUser(address):
        raise CommandError(f"no such user: {address}")
    store = openStore(config)
    try:
        box = store.mailbox(address, args.folder)
    except (KeyError, ValueError):
        raise CommandError(f"{address} has no mailbox {args.folder!r}"
                           f" (mailboxes: {', '.join(store.listMailboxes(address))})") from None
    messages = box.messages()
    for info in messages:
        try:
            with box.openMessage(info.uid) as content:
                sender, subject = _fromAndSubject(content)
        except KeyError:
            continue  # expunged meanwhile
        flags = " ".join(sorted(info.flags)) or "-"
        print(f"{info.uid:>6}  ({flags})  {info.size:>9}  {_localTime(info.internalDate)}"
              f"  {sender}  {subject}", file=out)
    total = sum(info.size for info in messages)
    n = len(messages)
    print(f"-- {address} {box.name}: {n} message{'' if n == 1 else 's'}, {total} bytes",
          file=out)


def cmdBackup(args, config, out):
    if config.storage.backend == configModule.POSTGRESQL:
        raise CommandError('[storage] backend = "postgresql" keeps the mail in the database:'
                           " back it up with PostgreSQL's tools (pg_dump, or continuous"
                           " archiving)")
    store = openStore(config)
    if getattr(store, "backup", None) is None:
        raise CommandError(f'[storage] backend = "{config.storage.backend}" has no backup:'
                           " copy data_dir/mail with the server stopped, or use"
                           " pymailer export")
    messages, blobs = store.backup(args.directory)
    print(f"backup in {args.directory}: {messages} messages, {blobs} distinct contents",
          file=out)


def cmdDbMigrate(args, config, out):
    if config.storage.backend != configModule.POSTGRESQL:
        raise CommandError(f'nothing to migrate: [storage] backend = "{config.storage.backend}"'
                           " brings its own files up to date when the server starts")
    from pymailer.pg.pool import connect
    from pymailer.pg.schema import migrate

    with connect(config.storage.dsn) as db:
        before, after = migrate(db)
    if before == after:
        print(f"schema version {after}: up to date", file=out)
    else:
        print(f"schema version {before} -> {after}", file=out)


def cmdMigrateStorage(args, config, out):
    from pymailer.pg.migrate_storage import MigrationError, migrateStorage
    from pymailer.serverlock import DataDirectoryBusy

    if not args.dsn.startswith(("postgresql://", "postgres://")):
        raise CommandError("expected the database as a URI starting with postgresql://")
    if args.blobs is not None and not os.path.isabs(args.blobs):
        raise CommandError(f"--blobs {args.blobs}: expected an absolute directory path")
    try:
        migrateStorage(config, args.dsn, out, args.blobs)
    except (MigrationError, DataDirectoryBusy) as e:
        raise CommandError(str(e)) from None
    blobs = "" if args.blobs is None else f', blobs = "{args.blobs}"'
    print(f'done: set [storage] backend = "{args.to}", dsn = "..."{blobs} in the'
          " configuration of every node, then start them", file=out)


# --- parser ----------------------------------------------------------------

def _group(subparsers, name, help):
    """A command with its own required sub-commands (C{domain add}...)."""
    parser = subparsers.add_parser(name, help=help, description=help)
    actions = parser.add_subparsers(dest="action", metavar="ACTION",
                                    required=True)
    return actions


def _passwordOption(parser):
    parser.add_argument(
        "--password-stdin", action="store_true",
        help="read the password as one line from standard input instead of"
             " prompting (there is deliberately no option taking the"
             " password itself)")


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser: C{pymailer [--config FILE] COMMAND [ACTION] ...}.
    New command groups (C{queue}, C{dkim}) are added with L{_group}.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer a pymailer mail server.")
    parser.add_argument(
        "--config", metavar="FILE",
        help="configuration file (default: the embedded development"
             " default, data in ./pymailer-data)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     required=True)

    p = commands.add_parser(
        "check-config", help="validate the configuration and exit")
    p.set_defaults(func=cmdCheckConfig)

    actions = _group(commands, "domain", "manage local domains")
    p = actions.add_parser("add", help="add a local domain")
    p.add_argument("domain")
    p.add_argument("--catch-all", metavar="ADDRESS",
                   help="receive mail for unknown local parts here")
    p.set_defaults(func=cmdDomainAdd)
    p = actions.add_parser("list", help="list local domains")
    p.set_defaults(func=cmdDomainList)
    p = actions.add_parser(
        "remove", help="remove a domain with its users and aliases")
    p.add_argument("domain")
    p.set_defaults(func=cmdDomainRemove)

    actions = _group(commands, "user", "manage users (mailbox owners)")
    p = actions.add_parser("add", help="add a user (prompts for a password)")
    p.add_argument("address")
    _passwordOption(p)
    p.add_argument("--admin", action="store_true",
                   help="the user may use the web admin pages")
    p.set_defaults(func=cmdUserAdd)
    p = actions.add_parser(
        "admin", help="let a user use the web admin pages (--off: no longer)")
    p.add_argument("address")
    p.add_argument("--off", action="store_true", help="take admin rights away")
    p.set_defaults(func=cmdUserAdmin)
    for action, help in (("disable", "refuse a user's logins (mail to it is still delivered)"),
                         ("enable", "let a disabled user log in again")):
        p = actions.add_parser(action, help=help)
        p.add_argument("address")
        p.set_defaults(func=cmdUserDisable)
    p = actions.add_parser("passwd", help="change a user's password")
    p.add_argument("address")
    _passwordOption(p)
    p.set_defaults(func=cmdUserPasswd)
    p = actions.add_parser(
        "quota", help="limit the storage a user's mail may take (IMAP QUOTA; SMTP 452 when full)")
    p.add_argument("address")
    p.add_argument("size", metavar="SIZE", nargs="?",
                   help="500M, 2G, 100K, a number of octets, or 'none' for no limit;"
                        " left out: show the limit and the storage used")
    p.set_defaults(func=cmdUserQuota)
    p = actions.add_parser("list", help="list users, with their storage used and quota")
    p.add_argument("--domain", help="only users of this domain")
    p.set_defaults(func=cmdUserList)
    p = actions.add_parser("remove",
                           help="remove a user (their mail is kept)")
    p.add_argument("address")
    p.set_defaults(func=cmdUserRemove)

    actions = _group(commands, "alias", "manage aliases")
    p = actions.add_parser("add", help="add targets to an alias")
    p.add_argument("alias")
    p.add_argument("targets", metavar="TARGET", nargs="+")
    p.set_defaults(func=cmdAliasAdd)
    p = actions.add_parser("list", help="list aliases")
    p.set_defaults(func=cmdAliasList)
    p = actions.add_parser(
        "remove",
        help="remove targets of an alias, or the whole alias if none given")
    p.add_argument("alias")
    p.add_argument("targets", metavar="TARGET", nargs="*")
    p.set_defaults(func=cmdAliasRemove)

    actions = _group(commands, "queue",
                     "inspect and manage the mail queue (safe while the"
                     " server runs)")
    p = actions.add_parser(
        "list", help="one line per queued message: id, state, size, age,"
                     " sender, recipients, next retry and last error")
    p.set_defaults(func=cmdQueueList)
    p = actions.add_parser(
        "show", help="a message's envelope and the start of its headers")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmdQueueShow)
    p = actions.add_parser(
        "flush", help="retry deferred mail now (one message, or all)")
    p.add_argument("id", metavar="ID", nargs="?")
    p.set_defaults(func=cmdQueueFlush)
    p = actions.add_parser("hold", help="keep a message from delivery")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmdQueueHold)
    p = actions.add_parser("release", help="deliver a held message again")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmdQueueRelease)
    p = actions.add_parser(
        "delete", help="remove a message without telling anyone")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmdQueueDelete)
    p = actions.add_parser(
        "bounce", help="fail a message's pending recipients and send the"
                       " sender a bounce")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmdQueueBounce)

    actions = _group(commands, "dkim", "manage DKIM signing keys")
    p = actions.add_parser(
        "keygen", help="make an RSA and an Ed25519 key for a domain in"
                       " data_dir (or the shared database) and print their DNS records")
    p.add_argument("domain")
    p.add_argument(
        "--selector", metavar="S",
        help="base selector: the RSA key gets S, the Ed25519 key S-ed25519"
             " (default: s + year + month, e.g. s202607)")
    p.add_argument("--force", action="store_true",
                   help="replace existing keys of these selectors")
    p.set_defaults(func=cmdDkimKeygen)

    p = commands.add_parser(
        "dns", help="print the DNS records a domain needs (MX, SPF, DKIM,"
                    " DMARC, SRV) in zone-file form")
    p.add_argument("domain")
    p.set_defaults(func=cmdDns)

    p = commands.add_parser(
        "doctor", help="compare what DNS publishes with the records the domains need,"
                       " and the PTR of this server's addresses; exit status 1 if"
                       " anything is missing or wrong")
    p.add_argument("domain", nargs="?", help="only this domain (default: every domain)")
    p.set_defaults(func=cmdDoctor)

    actions = _group(commands, "spam", "spam and virus protection")
    p = actions.add_parser(
        "stats", help="verdicts per check and action (as the server last recorded them,"
                      " every 10 s) and each user's classifier training")
    p.add_argument("address", nargs="?", help="only the verdicts for this recipient")
    p.set_defaults(func=cmdSpamStats)


    p = commands.add_parser(
        "import", help="bring a user's mail in from a Maildir tree (ours or Dovecot's,"
                       " keeping UIDs) or an mbox file (safe while the server runs)")
    p.add_argument("format", choices=("maildir", "mbox"))
    p.add_argument("address")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--folder", metavar="NAME",
                   help="import into this folder (a Maildir's subfolders go below it;"
                        " default: INBOX, and the Maildir's own folder names)")
    p.set_defaults(func=cmdImport)

    actions = _group(commands, "mailbox", "look into users' mailboxes")
    p = actions.add_parser(
        "list", help="one line per message: UID, flags, size, date received, From, Subject")
    p.add_argument("address")
    p.add_argument("folder", metavar="FOLDER", nargs="?", default="INBOX",
                   help="a mailbox name as IMAP shows it (default: INBOX)")
    p.set_defaults(func=cmdMailboxList)

    actions = _group(commands, "export", "write a user's mail out")
    p = actions.add_parser(
        "maildir", help="as a Maildir++ tree that Dovecot and mutt read, with UIDs")
    p.add_argument("address")
    p.add_argument("directory", metavar="DIR", help="a new or empty directory")
    p.set_defaults(func=cmdExport)

    actions = _group(commands, "db", 'the shared database of [storage] backend = "postgresql"')
    p = actions.add_parser(
        "migrate", help="bring the database's schema up to this version's (safe while"
                        " other nodes start or run it too)")
    p.set_defaults(func=cmdDbMigrate)

    p = commands.add_parser(
        "migrate-storage",
        help="move this installation's accounts, mail, queue and DKIM keys into an empty"
             " PostgreSQL database (the server stopped; resumable; the data here stays)")
    p.add_argument("--to", required=True, choices=(configModule.POSTGRESQL,),
                   help="the backend to move to")
    p.add_argument("dsn", metavar="DSN", help="the database, postgresql://user@host/dbname")
    p.add_argument("--blobs", metavar="DIR",
                   help="put message content in this shared directory ([storage] blobs;"
                        " hard links on the same file system) instead of the database")
    p.set_defaults(func=cmdMigrateStorage)

    p = commands.add_parser(
        "backup", help="a consistent copy of the message store (database and message"
                       " files) in DIR, while the server runs")
    p.add_argument("directory", metavar="DIR")
    p.set_defaults(func=cmdBackup)

    return parser


def _outputClosed():
    """
    The reader of our output went away (C{pymailer queue show ID | head}):
    stop quietly, as a Unix tool killed by SIGPIPE does (exit status 141),
    without an error message nor Python's own complaint at exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # Not a real file (tests): nothing to flush at exit.
    return 128 + signal.SIGPIPE


NEW_DATA_DIR = (f"{PROG}: note: made a new data directory {{}} (the embedded default's, in"
                " the working directory): a server started in another directory does not"
                " see it; run this where `twistd pymailer` runs, or give --config FILE")


def main(argv=None) -> int:
    """
    Run the command line C{argv} (default C{sys.argv[1:]}).

    @return: the exit status: 0 success, 1 error, 2 usage error.
    """
    parser = buildParser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2).
        return e.code if isinstance(e.code, int) else 2

    def fail(text):
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 1

    try:
        config = configModule.loadOrDefault(args.config)
    except configModule.ConfigError as e:
        return fail(str(e))

    # The embedded default's data is in the working directory: run in
    # another one, a command makes a new, empty data directory that the
    # running server never sees.  Say so rather than seem to work.
    newDataDir = args.config is None and not config.data_dir.exists()
    try:
        # A command may return its own exit status (doctor: 1 when a record is wrong).
        status = args.func(args, config, sys.stdout)
        sys.stdout.flush()  # A closed pipe shows here, not at exit.
        if newDataDir and config.data_dir.exists():
            print(NEW_DATA_DIR.format(config.data_dir), file=sys.stderr)
    except BrokenPipeError:
        return _outputClosed()
    except (CommandError, queueModel.QueueError, KeyError, ValueError, SchemaError) as e:
        return fail(_message(e))
    except sqlite3.Error as e:
        return fail(f"accounts database in {config.data_dir}: {_message(e)}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}")
    return status or 0
