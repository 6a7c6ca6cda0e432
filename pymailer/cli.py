"""
The C{pymailer} admin command: domains, users and aliases (queue and dkim
later), plus C{check-config}.

It changes the same SQLite accounts database the running server reads, so
changes apply at once, without a restart.  Run it as the user the server
runs as, so that files it creates stay readable by the server.

Passwords are read from the terminal (twice, no echo) or, with
C{--password-stdin}, as one line from standard input; never from the command
line, where any local user could read them in the process list.

Errors are one line, C{pymailer: error: ...}, exit status 1; usage errors
exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import getpass
import sqlite3
import sys

from pymailer import config as configModule
from pymailer.auth.directory import (
    checkMailboxName, normaliseAddress, normaliseDomain, openDirectory)
from pymailer.auth.passwords import hashPassword

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
    print(f"added user {address}", file=out)


def cmdUserPasswd(args, config, out):
    directory = openDirectory(config)
    address = normaliseAddress(args.address)
    if not directory.hasUser(address):
        raise CommandError(f"no such user: {address}")
    password = _readPassword(args)
    directory.setPasswordHash(address, hashPassword(password))
    print(f"changed password of {address}", file=out)


def cmdUserList(args, config, out):
    directory = openDirectory(config)
    if args.domain is not None and not directory.hasDomain(args.domain):
        raise CommandError(f"no such domain: {args.domain}")
    for address in directory.listUsers(args.domain):
        print(address, file=out)


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
    p.set_defaults(func=cmdUserAdd)
    p = actions.add_parser("passwd", help="change a user's password")
    p.add_argument("address")
    _passwordOption(p)
    p.set_defaults(func=cmdUserPasswd)
    p = actions.add_parser("list", help="list users")
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

    return parser


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

    try:
        args.func(args, config, sys.stdout)
    except (CommandError, KeyError, ValueError) as e:
        return fail(_message(e))
    except sqlite3.Error as e:
        return fail(f"accounts database in {config.data_dir}: {_message(e)}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}")
    return 0
