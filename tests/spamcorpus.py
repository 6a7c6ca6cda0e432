"""
A labelled corpus for measuring the classifier, generated (no download):
templated ham (meeting notes, invoices, newsletters, family mail, code
review) and spam (pharmacy, crypto, lottery, loans, phishing), each
message assembled from several interchangeable phrasings, names, numbers
and encodings (plain, quoted-printable, base64, HTML), from a seeded RNG,
so the same seed gives the same corpus.
"""

import email.policy
import random
from email.message import EmailMessage

FIRST = ["Anna", "Ben", "Carla", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
         "Kemal", "Lena", "Marek", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tara"]
COMPANIES = ["acme-tools.test", "northwind.test", "blueriver.test", "lindgren-ab.test",
             "kestrel.test", "ostara.test"]

HAM = {
    "meeting": (
        ["Notes from {day}'s {team} meeting", "{team} sync: minutes and actions",
         "Follow-up: {team} meeting on {day}", "Agenda for {day} ({team})"],
        ["Hi all,\n\nthanks for joining the {team} meeting on {day}. We reviewed the {project}"
         " milestones and agreed to move the release to {date}.",
         "Hello team,\n\nhere are the minutes of {day}'s {team} sync. {name} presented the"
         " {project} status; the integration tests still fail on the staging cluster.",
         "Hi,\n\nshort summary of the {team} meeting: the {project} budget is approved,"
         " {name} will update the roadmap before {date}."],
        ["Action items: {name} drafts the design document, {name2} reviews the test plan.",
         "Next steps: schedule a review with the architecture group and update the wiki page.",
         "Open questions: who owns the deployment scripts, and do we need another sprint?",
         "Please add comments to the shared document before our next call."],
        ["Best regards,\n{name}", "Cheers,\n{name}", "Thanks,\n{name}\n{team} lead"]),
    "invoice": (
        ["Invoice {num} for {month}", "Your invoice {num} from {company}",
         "Payment reminder: invoice {num}", "Receipt for order {num}"],
        ["Dear {name},\n\nplease find attached invoice {num} for the services delivered in"
         " {month}. The total of {amount} EUR is due within 30 days.",
         "Hello {name},\n\nthank you for your order {num}. We received your payment of"
         " {amount} EUR on {date}; this receipt is for your records.",
         "Dear customer,\n\nour records show that invoice {num} ({amount} EUR, issued in {month})"
         " is still open. If you have already paid, please ignore this reminder."],
        ["Bank transfer details are on the second page of the PDF.",
         "For questions about this invoice contact our accounting department.",
         "The purchase order reference is PO-{num2}.", "VAT number: DE{num2}{num}."],
        ["Kind regards,\nAccounting, {company}", "Regards,\n{name}\nBilling team"]),
    "newsletter": (
        ["{company} newsletter: {month} edition", "What's new at {company} this {month}",
         "Release notes for version {version}", "Community update - {month}"],
        ["Hello {name},\n\nthis month we shipped version {version} with faster search,"
         " a new calendar view and many bug fixes reported by our community.",
         "Dear reader,\n\nin this edition: an interview with our maintainers, the conference"
         " schedule for {month}, and a tutorial on writing plugins.",
         "Hi {name},\n\nthe {month} community update: {num} contributors merged pull requests,"
         " the documentation was translated into four languages."],
        ["Read the full article on our blog: https://blog.{company}/posts/{num}",
         "You receive this newsletter because you subscribed on our website.",
         "The meetup in Berlin is on {date}; registration opens next week.",
         "Thanks to everyone who filed issues and reviewed changes."],
        ["The {company} team", "See you next month,\n{name}"]),
    "family": (
        ["Dinner on {day}?", "Photos from the weekend", "Re: holiday plans for {month}",
         "Grandma's birthday"],
        ["Hi {name},\n\nare you free for dinner on {day}? We could try the new Italian place"
         " near the station, the kids would love to see you.",
         "Hey,\n\nI finally uploaded the photos from the lake. The one with the dog jumping into"
         " the water is my favourite.",
         "Hi {name},\n\nfor the holidays in {month} we were thinking about the cabin again."
         " Could you check whether your brother can come too?"],
        ["Let me know what works for you.", "Say hi to everyone from us.",
         "I'll bring the cake and the board games.", "Call me when you have a minute."],
        ["Love,\n{name}", "Hugs,\n{name}", "See you soon,\n{name}"]),
    "review": (
        ["Review request: {project} pull request {num}", "Re: [{project}] fix flaky test in"
         " scheduler", "CI failure on main ({project})", "Design review: {project} storage layer"],
        ["Hi {name},\n\ncould you review pull request {num}? It refactors the scheduler so"
         " retries use exponential backoff and adds unit tests.",
         "Hello,\n\nthe nightly build of {project} failed: the integration test for the"
         " database migration times out after 300 seconds on the arm64 runner.",
         "Hi {name},\n\nI pushed a new revision addressing your comments; the memory usage"
         " regression is gone and the benchmark is within two percent of before."],
        ["The diff is small, mostly in the queue module and its tests.",
         "Logs are attached; the failure started after commit {version}.",
         "No rush, end of the week is fine.", "I also updated the changelog."],
        ["Thanks,\n{name}", "Best,\n{name}"]),
    # Legitimate commerce: prices, discounts and links, as spam has.
    "shop": (
        ["Your order {num} has shipped", "Order confirmation {num}",
         "{pct}% off for members this weekend", "Your {company} account: new sign-in"],
        ["Hello {name},\n\nyour order {num} has shipped and should arrive by {date}. You can"
         " track the parcel with the link below.",
         "Hi {name},\n\nmembers get {pct}% off garden tools this weekend. The discount is"
         " applied at checkout, no code needed.",
         "Hello {name},\n\nwe noticed a new sign-in to your account from a browser on Linux."
         " If this was you, there is nothing to do."],
        ["Track your parcel: https://{company}/track/{num}",
         "Order total: {amount} EUR including VAT.",
         "You can change your email preferences in your account settings.",
         "If this was not you, change your password in the account settings."],
        ["Your {company} customer service", "The {company} team"]),
}

SPAM = {
    "pharmacy": (
        ["Cheap meds without prescription", "V1agra and C1alis at {pct}% off",
         "Your online pharmacy discount", "Best pills, lowest prices, fast shipping"],
        ["Buy generic viagra, cialis and other meds online with no prescription needed."
         " Discreet packaging and worldwide delivery!",
         "Our licensed online pharmacy offers the lowest prices on pills: save {pct}% on"
         " your first order, guaranteed satisfaction.",
         "Tired of paying too much? Order brand and generic medication today, no doctor"
         " visit, overnight shipping available."],
        ["Click here to order now: http://{spamhost}/pharmacy?id={num}",
         "Limited time offer, only {num2} packs left in stock!",
         "100% money back guarantee. Order now and get free bonus pills.",
         "Visit http://{spamhost}/meds and enter coupon code SAVE{pct}."],
        ["Unsubscribe here: http://{spamhost}/u", "Best wishes, Online Pharmacy Support"]),
    "crypto": (
        ["Turn ${small} into ${big} with this crypto secret", "Bitcoin profit alert!!!",
         "The coin that will 100x this month", "Exclusive crypto investment opportunity"],
        ["Our AI trading bot made investors ${big} last week. Join thousands who are"
         " already earning passive income with bitcoin and ethereum.",
         "Dear investor, a new token is launching tomorrow and early buyers will multiply"
         " their money. Guaranteed returns of {pct}% per week!",
         "Elon just revealed the secret crypto strategy banks do not want you to know."
         " Deposit now and double your bitcoin in 24 hours."],
        ["Register free at http://{spamhost}/invest?ref={num} before spots run out.",
         "Minimum deposit only ${small}. Withdraw your profit anytime.",
         "This offer expires at midnight, act now!",
         "Send your wallet address to claim your bonus coins."],
        ["Crypto Wealth Team", "To your financial freedom,\nMr. {name}"]),
    "lottery": (
        ["Congratulations! You have won {amount} USD", "WINNING NOTIFICATION ref {num}",
         "Claim your lottery prize now", "You are our lucky winner"],
        ["Your email address was selected in our international lottery draw and won the"
         " sum of {amount} USD. Contact our claims agent to receive your prize.",
         "Dear winner, we are pleased to inform you that your ticket number {num} won"
         " the jackpot. To claim the funds please send your full name and bank details.",
         "ATTENTION: your unclaimed prize of {amount} dollars will be forfeited unless you"
         " reply within 48 hours with the processing fee."],
        ["Contact the claims officer at claims@{spamhost} with reference {num2}.",
         "Keep this winning information confidential until your claim is processed.",
         "A small processing fee is required to release the funds.",
         "Reply urgently to avoid disqualification."],
        ["Mrs. {name}, Lottery Coordinator", "Prize Claims Department"]),
    "loan": (
        ["Pre-approved loan of ${big}", "Bad credit? No problem!", "Get cash today",
         "Lowest interest rates guaranteed"],
        ["You are pre-approved for a personal loan of ${big} with no credit check. Get"
         " the cash you need deposited into your account today!",
         "Consolidate your debt and lower your payments by {pct}%. Bad credit is okay,"
         " instant approval in minutes.",
         "Need money fast? Our lenders approve everyone, even with bankruptcy, at the"
         " lowest interest rates online."],
        ["Apply now at http://{spamhost}/loan?offer={num}", "No paperwork, no fees, no waiting!",
         "This exclusive offer is only valid today.", "Cash in your account within one hour."],
        ["Fast Cash Lending", "Customer Care, Loan Approval Center"]),
    "phish": (
        ["Your account has been suspended", "Urgent: verify your password",
         "Unusual sign-in activity detected", "Your mailbox is full"],
        ["Dear user, we detected unusual activity on your account. Verify your identity"
         " within 24 hours or your account will be permanently closed.",
         "Your mailbox storage quota has been exceeded. Click the link below to upgrade"
         " and confirm your login credentials to keep receiving messages.",
         "Security alert: someone tried to sign in from an unknown device. Confirm your"
         " password immediately to secure your account."],
        ["Verify now: http://{spamhost}/secure/login?u={num}",
         "Failure to verify will result in suspension.", "Enter your username and password"
         " on the secure page.", "This is an automated security message."],
        ["Account Security Team", "Webmail Administrator"]),
    # Spam in business clothes: invoices and shipping notices.
    "invoicescam": (
        ["Overdue invoice {num}", "Payment required: invoice {num}",
         "Your parcel could not be delivered", "Document shared with you: invoice {num}"],
        ["Dear customer,\n\nyour invoice {num} of {amount} EUR is overdue. Open the"
         " document at the link below to avoid collection fees.",
         "Hello,\n\nwe tried to deliver your parcel on {date} but customs fees of {small}"
         " EUR are unpaid. Pay now to schedule a new delivery.",
         "Hi,\n\na document (invoice {num}) was shared with you. Sign in with your email"
         " password to view it."],
        ["View invoice: http://{spamhost}/doc?inv={num}",
         "Pay the outstanding amount today to avoid suspension of services.",
         "Enter your card details on the secure payment page.",
         "This link expires in 24 hours."],
        ["Accounts Receivable", "Delivery Service", "Document Services"]),
}

SPAMHOSTS = ["cheap-deals.example", "win-now.example", "crypto-gains.example",
             "secure-verify.example", "fastcash.example", "best-pills.example"]
SPAMDOMAINS = ["mailer{n}.example", "promo{n}.example", "offers{n}.example"]


def _fill(rng, text):
    name, name2 = rng.sample(FIRST, 2)
    company = rng.choice(COMPANIES)
    return text.format(
        name=name, name2=name2, company=company, team=rng.choice(
            ["platform", "backend", "design", "sales", "research", "support"]),
        project=rng.choice(["Atlas", "Beacon", "Cobalt", "Delta", "Ember"]),
        day=rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        month=rng.choice(["January", "March", "May", "July", "September", "November"]),
        date=f"{rng.randint(1, 28)}.{rng.randint(1, 12)}.", num=rng.randint(1000, 99999),
        num2=rng.randint(10, 999), amount=f"{rng.randint(100, 99999):,}",
        version=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        pct=rng.choice([50, 70, 80, 90]), small=rng.choice([50, 100, 250]),
        big=f"{rng.randint(5, 900)},000", spamhost=rng.choice(SPAMHOSTS))


def _message(rng, templates, sender, recipient):
    subjects, openings, middles, closings = templates
    body = "\n\n".join([
        _fill(rng, rng.choice(openings)),
        *(_fill(rng, m) for m in rng.sample(middles, rng.randint(1, 3))),
        _fill(rng, rng.choice(closings))]) + "\n"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = _fill(rng, rng.choice(subjects))
    msg["Date"] = "Tue, 14 Jul 2026 10:00:00 +0000"
    style = rng.choice(["plain", "qp", "base64", "html"])
    if style == "html":
        msg.set_content(body)
        paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
        msg.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    else:
        msg.set_content(body, cte={"plain": "7bit", "qp": "quoted-printable",
                                   "base64": "base64"}[style])
    return msg.as_bytes(policy=email.policy.SMTP)


def corpus(count, seed=1, recipient="alice@example.org"):
    """
    C{(ham, spam)}: two lists of C{count} messages (bytes), kinds in turn.
    """
    rng = random.Random(seed)
    ham, spam = [], []
    hamKinds, spamKinds = list(HAM), list(SPAM)
    for i in range(count):
        kind = hamKinds[i % len(hamKinds)]
        sender = f"{rng.choice(FIRST).lower()}@{rng.choice(COMPANIES)}"
        ham.append(_message(rng, HAM[kind], sender, recipient))
        kind = spamKinds[i % len(spamKinds)]
        sender = (f"{rng.choice(['info', 'promo', 'winner', 'support', 'noreply'])}"
                  f"{rng.randint(1, 999)}@"
                  f"{rng.choice(SPAMDOMAINS).format(n=rng.randint(1, 50))}")
        spam.append(_message(rng, SPAM[kind], sender, recipient))
    return ham, spam
