"""A second corpus for bench/retrieval.py: a product unlike the sample's, seeded, with answers.

    python bench/retrieval_corpus.py OUT_DIR [--seed S]

``examples/corpus`` is a travel app: 44 files, four teams, designs of one to a dozen screens.
This one is a grocery delivery app ("Larder") shaped differently, so a question set over it
tests what the sample does not:

* twelve teams, each design in its team's folder;
* long PRDs (a dozen sections, shared boilerplate between them, as real PRDs have);
* designs with many screens, long state lists and large token tables (dozens of hex colours);
* near-duplicate topics: the same feature specified for two markets, or on mobile and on web,
  with different numbers, so only the distinguishing detail finds the right file.

Every fact (limits, IDs, colours, names) is drawn from a seeded ``random.Random``: the same
seed writes the same bytes, which bench/retrieval.py checks against a digest before it scores
the questions written over it (``bench/questions/generated.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 2024
TEAMS = (
    "Atlas", "Beacon", "Comet", "Drift", "Ember", "Fable",
    "Garnet", "Harbor", "Indigo", "Juniper", "Kestrel", "Lagoon",
)  # fmt: skip
PEOPLE = (
    "Ada Quist", "Bram de Vries", "Carmen Ortiz", "Dev Patel", "Elif Yildiz", "Femi Adebayo",
    "Greta Lund", "Hugo Marchand", "Ivana Horvat", "Jomo Kariuki", "Kaito Mori", "Lucia Bianchi",
    "Malik Haddad", "Nora Eriksen", "Oscar Nilsson", "Paula Mendes", "Quinn O'Hara",
    "Rosa Delgado", "Sven Aalto", "Tamsin Reed", "Uma Krishnan", "Vera Novak", "Wen Zhou",
    "Xavier Dubois", "Yara Saleh", "Zeno Ricci",
)  # fmt: skip
STATES = (
    "default", "hover", "pressed", "focused", "disabled", "loading", "empty", "error",
    "success", "offline", "stale", "syncing", "selected", "expanded", "collapsed", "skeleton",
    "read-only", "highlighted", "dismissed", "queued", "retrying", "expired", "locked",
    "partial", "warning", "confirmed", "cancelled", "pending-review", "rate-limited",
)  # fmt: skip
DEPOTS = (
    "Amsterdam-West", "Amsterdam-Noord", "Rotterdam-Zuid", "Utrecht", "Den Haag", "Eindhoven",
    "Groningen", "London Park Royal", "London Croydon", "Manchester", "Leeds", "Bristol",
    "Birmingham", "Glasgow",
)  # fmt: skip
DECISIONS = (
    "agreed to keep the numbers in this document for the pilot",
    "moved the web version to the next release",
    "legal approved the customer-facing copy",
    "the data team added the metrics to the weekly dashboard",
    "decided against an A/B test; the pilot depots serve as the control",
    "support asked for a runbook before the ramp",
)  # fmt: skip
TYPE_SCALE = (
    "display",
    "headline",
    "title-large",
    "title",
    "body",
    "body-small",
    "label",
    "caption",
)


def _hex(rng: random.Random) -> str:
    return f"#{rng.randrange(0x1000000):06X}"


@dataclass
class Topic:
    """A feature area: its prose, with ``{fact}`` slots filled from ``facts(rng)``."""

    slug: str
    name: str
    prefix: str
    facts: Callable[[random.Random], dict[str, Any]]
    summary: str
    problem: list[str]
    goals: list[str]
    non_goals: list[str]
    requirements: list[str]
    metrics: list[tuple[str, str, str]]
    components: list[tuple[str, str, str]]
    rules: list[str]
    rationale: list[str]
    open_questions: list[str]
    color_names: list[str]
    markets: tuple[str, ...] = ()
    """Two markets: the PRD is written once for each, with its own facts (near duplicates)."""
    extra: dict[str, list[str]] = field(default_factory=dict)


TOPICS: list[Topic] = [
    Topic(
        slug="delivery-slots",
        name="Delivery Slot Booking",
        prefix="DS",
        facts=lambda r: {
            "slot_minutes": r.choice((60, 90, 120)),
            "cutoff_hours": r.choice((4, 6, 8, 12)),
            "hold_minutes": r.choice((15, 20, 25, 30)),
            "vans_per_slot": r.randint(6, 18),
            "priority_fee": r.choice(("€2.49", "€2.99", "€3.49", "€3.99")),
            "green_discount": r.choice(("€0.50", "€0.75", "€1.00")),
        },
        summary="How customers pick a delivery window at checkout: the slot grid, reserved "
        "slots, priority slots and 'green' slots when a van is already in the neighbourhood.",
        problem=[
            "Customers abandon checkout when the slot they want is gone: in the last quarter "
            "18% of abandoned baskets ended on the slot picker. A slot is currently "
            "{slot_minutes} minutes long and bookable until {cutoff_hours} hours before it "
            "starts, which leaves evening slots full by lunchtime.",
            "Reserved slots expire silently after {hold_minutes} minutes while the customer is "
            "still filling the basket, and support hears about it as 'the app stole my slot'.",
        ],
        goals=[
            "Cut checkout abandonment on the slot picker by a third.",
            "Fill vans more evenly: no slot above 95% capacity while its neighbours sit below 50%.",
            "Make the reservation timer visible so nobody loses a slot without warning.",
        ],
        non_goals=[
            "Same-hour delivery (covered by the rapid delivery pilot).",
            "Choosing a specific driver.",
        ],
        requirements=[
            "Slot grid of 7 days by {slot_minutes}-minute windows, scrolling horizontally.",
            "A slot can be reserved for {hold_minutes} minutes; a banner counts down the last 5.",
            "Booking closes {cutoff_hours} hours before the slot starts.",
            "Each slot holds at most {vans_per_slot} van routes per depot.",
            "Priority slots cost {priority_fee} and skip the capacity cap for members.",
            "Green slots, when a van is already nearby, are discounted by {green_discount}.",
        ],
        metrics=[
            ("Abandonment on the slot picker", "18%", "12%"),
            ("Vans above 95% capacity", "31%", "10%"),
            ("Reservations that expire unused", "22%", "8%"),
        ],
        components=[
            (
                "slot-grid",
                "Choose a delivery time",
                "Days as columns, {slot_minutes}-minute "
                "windows as rows; full slots are greyed with 'Full' text, never colour alone.",
            ),
            (
                "reservation-timer",
                "Reserved for {hold_minutes} min",
                "Counts down; at 5 minutes left a banner offers 'Keep my slot' which extends once.",
            ),
            (
                "green-badge",
                "Green slot · save {green_discount}",
                "Shown when a van is already delivering on the street; leaf icon plus text.",
            ),
            (
                "priority-chip",
                "Priority {priority_fee}",
                "Members only; opens an explanation sheet the first time.",
            ),
            ("cutoff-note", "Order by {cutoff_hours} h before", "Caption under each day."),
            (
                "capacity-meter",
                "Van capacity",
                "Internal build only: shows routes booked of {vans_per_slot}.",
            ),
        ],
        rules=[
            "A slot shows as full once {vans_per_slot} routes are booked at the depot.",
            "Reservations are released {hold_minutes} minutes after they are made unless the "
            "order is placed.",
        ],
        rationale=[
            "A visible countdown replaced the silent expiry after support tickets about lost "
            "slots doubled in December.",
            "Green slots nudge customers toward routes that already exist, which cuts "
            "kilometres per order.",
        ],
        open_questions=[
            "Should priority slots be offered to non-members at a higher price?",
            "Do we show how many slots are left when fewer than three remain?",
        ],
        color_names=["slot-available", "slot-full", "slot-green", "slot-priority", "timer"],
        markets=("Netherlands", "United Kingdom"),
    ),
    Topic(
        slug="substitutions",
        name="Item Substitutions",
        prefix="SB",
        facts=lambda r: {
            "approve_minutes": r.choice((10, 15, 20, 30)),
            "max_increase": r.choice((10, 15, 20, 25)),
            "default_policy": r.choice(("best match", "same brand, other size", "no substitute")),
            "accept_rate": r.randint(61, 79),
            "model": r.choice(("SwapRank", "LikeFor", "NearMatch")),
        },
        summary="What happens when an ordered item is out of stock at picking time: how the "
        "picker chooses a replacement, how the customer approves it, and what they pay.",
        problem=[
            "One order in five has at least one missing item. Pickers choose replacements by "
            "hand, and customers accept only {accept_rate}% of them. Customers learn about a "
            "substitution at the door, with no chance to refuse before the van leaves.",
            "A replacement can cost more than the ordered item, and customers feel tricked when "
            "a cheaper own-brand yoghurt becomes a premium one.",
        ],
        goals=[
            "Let customers approve or reject each substitution before the van leaves.",
            "Raise the acceptance rate of suggested substitutions above 85%.",
            "Never charge more than the ordered item's price for a substitute.",
        ],
        non_goals=[
            "Substitutions for alcohol and infant formula (never substituted).",
            "Letting customers chat with the picker.",
        ],
        requirements=[
            "The default substitution preference for new customers is '{default_policy}'.",
            "Customers have {approve_minutes} minutes to approve a substitution; silence "
            "counts as approval.",
            "A substitute may cost at most {max_increase}% more than the ordered item, and "
            "the customer pays the ordered item's price.",
            "Suggestions are ranked by the {model} model trained on past acceptances.",
            "Per-item preference: 'Don't substitute' can be set on any basket line.",
            "Rejected substitutions are refunded before the order is charged.",
        ],
        metrics=[
            ("Substitution acceptance", "{accept_rate}%", "85%"),
            ("Orders with a rejected substitution at the door", "9%", "2%"),
            ("Complaints about substitute price", "4 per 1,000 orders", "1 per 1,000"),
        ],
        components=[
            (
                "substitution-card",
                "Oat milk 1 L → Oat milk barista 1 L",
                "Shows both items with photos and prices; Accept and Reject buttons.",
            ),
            (
                "approval-timer",
                "Answer within {approve_minutes} min",
                "After the timer the substitute is accepted automatically.",
            ),
            (
                "preference-picker",
                "If something is out of stock",
                "Options: best match, same "
                "brand other size, no substitute; default '{default_policy}'.",
            ),
            (
                "price-note",
                "You pay the original price",
                "Shown when the substitute costs more, up to {max_increase}% more.",
            ),
            ("line-toggle", "Don't substitute", "Per basket line switch."),
        ],
        rules=[
            "Alcohol and infant formula are never substituted.",
            "A substitute costing more than {max_increase}% above the ordered item is not offered.",
        ],
        rationale=[
            "Customers accepted suggestions ranked by {model} more often than pickers' own "
            "choices in the pilot.",
        ],
        open_questions=[
            "Should the approval window shrink for early-morning slots?",
        ],
        color_names=["accept", "reject", "substitute-border", "price-note"],
    ),
    Topic(
        slug="driver-tracking",
        name="Live Driver Tracking",
        prefix="DT",
        facts=lambda r: {
            "ping_seconds": r.choice((5, 10, 15, 20)),
            "geofence_m": r.choice((150, 200, 250, 300, 400)),
            "eta_window": r.choice((10, 15, 20)),
            "van_color": _hex(r),
            "map_vendor": r.choice(("Mapbox", "HERE", "TomTom")),
        },
        summary="The live map on the order screen: where the van is, when it will arrive, and "
        "the 'arriving now' moment, with the driver's privacy protected.",
        problem=[
            "Customers call support to ask where their order is: 'where is my order' is 27% of "
            "contacts on delivery days. The order screen shows a {eta_window}-minute window but "
            "no position, so people wait by the door for an hour.",
        ],
        goals=[
            "Halve 'where is my order' contacts.",
            "Show the van only when it is on the way to this customer, never on other stops.",
        ],
        non_goals=["Contacting the driver by phone from the app.", "Tracking for store pickup."],
        requirements=[
            "The driver app sends its position every {ping_seconds} seconds while on a route.",
            "The van appears on the customer's map only when their stop is next.",
            "'Arriving now' is shown when the van is within {geofence_m} metres.",
            "The ETA window narrows to {eta_window} minutes once the van leaves the previous stop.",
            "Maps and routing from {map_vendor}.",
        ],
        metrics=[
            ("'Where is my order' contacts per 1,000 orders", "41", "20"),
            ("Customers opening the live map", "n/a", "60%"),
        ],
        components=[
            (
                "van-marker",
                "Your Larder van",
                "Marker in {van_color}, heading arrow, updates "
                "every {ping_seconds} s with a 1 s glide.",
            ),
            (
                "eta-banner",
                "Arriving within a {eta_window}-minute window",
                "Updates as stops finish.",
            ),
            (
                "arriving-now",
                "Your driver is arriving",
                "Full-width card within {geofence_m} m; haptic once.",
            ),
            ("privacy-note", "We show the van only on the way to you", "Footnote."),
        ],
        rules=[
            "The driver's position is never shown while the van serves other customers.",
            "Positions are kept for 24 hours, then aggregated.",
        ],
        rationale=[
            "Showing the van only for the final leg protects drivers and other customers' "
            "addresses.",
        ],
        open_questions=["Should we show the driver's first name and photo?"],
        color_names=["van", "route-line", "eta-banner", "arriving-card"],
    ),
    Topic(
        slug="loyalty-rewards",
        name="Larder Rewards Loyalty Programme",
        prefix="LR",
        facts=lambda r: {
            "points_per_euro": r.choice((1, 2, 5, 10)),
            "voucher_points": r.choice((500, 750, 1000, 1500)),
            "voucher_value": r.choice(("€5", "€7.50", "€10")),
            "expiry_months": r.choice((12, 18, 24)),
            "gold_spend": r.choice(("€600", "€800", "€1,000", "€1,200")),
            "tiers": r.choice((("Sprout", "Harvest", "Orchard"), ("Seed", "Leaf", "Oak"))),
        },
        summary="Points for every order, vouchers when enough are collected, and tiers that "
        "unlock perks for regular customers.",
        problem=[
            "Regular customers get nothing for their loyalty, and 38% of churned customers named "
            "a competitor's rewards scheme as the reason they left.",
        ],
        goals=[
            "Raise 90-day retention of customers with three or more orders by 5 points.",
            "Make the programme simple enough to explain in one sentence.",
        ],
        non_goals=["Partner points (airlines, fuel).", "Paid membership tiers."],
        requirements=[
            "Customers earn {points_per_euro} points per euro spent, excluding delivery fees "
            "and deposits.",
            "{voucher_points} points convert into a {voucher_value} voucher.",
            "Points expire {expiry_months} months after they were earned.",
            "Three tiers: {tier0}, {tier1} and {tier2}; {tier2} needs {gold_spend} spent in a "
            "calendar year.",
            "Points are added when the order is delivered, not when it is placed.",
        ],
        metrics=[
            ("90-day retention, 3+ orders", "54%", "59%"),
            ("Vouchers redeemed", "n/a", "70%"),
        ],
        components=[
            (
                "points-balance",
                "1,240 points",
                "Tap opens history; expiring points shown in the next {expiry_months} months.",
            ),
            ("tier-card", "{tier1} member", "Progress bar to {tier2} at {gold_spend}."),
            (
                "voucher-button",
                "Turn {voucher_points} points into {voucher_value}",
                "Disabled below the threshold.",
            ),
        ],
        rules=["Returned items deduct the points they earned."],
        rationale=["Tier names avoid metals so the lowest tier does not feel like a loss."],
        open_questions=["Should points be shared within a household cart?"],
        color_names=["tier-low", "tier-mid", "tier-top", "points"],
    ),
    Topic(
        slug="age-verification",
        name="Age Verification for Alcohol",
        prefix="AV",
        facts=lambda r: {
            "vendor": r.choice(("Veriff", "Onfido", "IDnow")),
            "retries": r.choice((2, 3, 4)),
            "min_age_nl": 18,
            "challenge_age": r.choice((21, 25)),
            "door_refusals": r.choice(("1.8%", "2.4%", "3.1%")),
        },
        summary="Checking that a customer may buy alcohol: an ID check in the app before the "
        "first order with alcohol, and a check at the door.",
        problem=[
            "Drivers refuse {door_refusals} of orders with alcohol at the door because nobody "
            "can show ID, and the whole order comes back. The law requires a check at handover "
            "whatever the app knows.",
        ],
        goals=["Cut refused handovers by two thirds.", "Keep the in-app check under a minute."],
        non_goals=["Tobacco (not sold).", "Verifying age for medicines."],
        requirements=[
            "In-app ID check with {vendor} before the first order containing alcohol.",
            "A customer gets {retries} attempts before the check is handed to support.",
            "Drivers ask for ID from anyone who looks under {challenge_age}.",
            "The minimum age is 18 in the Netherlands and the United Kingdom.",
            "A failed check at the door returns only the alcohol, not the whole order.",
        ],
        metrics=[("Refused handovers", "{door_refusals}", "0.6%")],
        components=[
            ("id-scan", "Scan your ID", "Camera with edge detection, {vendor} SDK."),
            ("attempts-note", "{retries} attempts left", "Shown after a failed scan."),
            ("alcohol-badge", "18+", "On product tiles and basket lines."),
        ],
        rules=["Alcohol lines are removed from the order if the check fails at the door."],
        rationale=["Returning only the alcohol keeps the rest of the shop with the customer."],
        open_questions=["Do we store the verified date of birth or only a flag?"],
        color_names=["age-badge", "scan-frame"],
    ),
    Topic(
        slug="tipping",
        name="Driver Tipping",
        prefix="TP",
        facts=lambda r: {
            "options": r.choice(("€1 / €2 / €3", "€1.50 / €2.50 / €4", "5% / 10% / 15%")),
            "max_tip": r.choice(("€20", "€25", "€50")),
            "edit_hours": r.choice((2, 12, 24, 48)),
            "payout_days": r.choice((3, 7, 14)),
        },
        summary="Letting customers thank their driver with a tip at checkout or after delivery.",
        problem=[
            "Customers hand drivers cash or ask support how to tip; 12% of drivers' feedback "
            "asked for in-app tipping.",
        ],
        goals=["Every tip reaches the driver in full.", "Tipping never feels pushy."],
        non_goals=["Tipping pickers.", "Tips in loyalty points."],
        requirements=[
            "Tip presets at checkout: {options}; custom amount up to {max_tip}.",
            "The tip can be changed or added up to {edit_hours} hours after delivery.",
            "Tips are paid out to drivers within {payout_days} days, with no fee taken.",
            "No tip is preselected.",
        ],
        metrics=[("Orders with a tip", "n/a", "25%")],
        components=[
            ("tip-chips", "{options}", "None selected by default."),
            ("custom-tip", "Other amount", "Up to {max_tip}."),
            ("edit-tip", "Change tip", "Available for {edit_hours} h after delivery."),
        ],
        rules=["100% of the tip goes to the driver."],
        rationale=["No default tip: a preselected tip read as pressure in testing."],
        open_questions=["Should a tip be split when two drivers share a route?"],
        color_names=["tip-selected", "tip-chip"],
    ),
    Topic(
        slug="household-cart",
        name="Shared Household Cart",
        prefix="HC",
        facts=lambda r: {
            "max_members": r.choice((4, 6, 8)),
            "lock_minutes": r.choice((5, 10, 15)),
            "invite_days": r.choice((3, 7, 14)),
            "code_len": r.choice((6, 8)),
        },
        summary="One basket that everyone in a household can add to, with one person who "
        "checks out and pays.",
        problem=[
            "Households send each other screenshots of what to buy; 44% of surveyed families "
            "said someone else's items were forgotten in the last month.",
        ],
        goals=["One basket per household.", "Nobody adds items while the payer checks out."],
        non_goals=["Splitting the bill between members.", "Separate deliveries per member."],
        requirements=[
            "A household has at most {max_members} members.",
            "Invites are {code_len}-character codes valid for {invite_days} days.",
            "When the payer starts checkout the cart locks for {lock_minutes} minutes.",
            "Each line shows who added it.",
        ],
        metrics=[("Orders from shared carts", "n/a", "15%")],
        components=[
            ("member-avatars", "Who added this", "Avatar on each line."),
            ("lock-banner", "Maya is checking out", "Cart read-only for {lock_minutes} min."),
            ("invite-code", "Join code", "{code_len} characters, no ambiguous letters."),
        ],
        rules=["Only the payer can remove other members' items."],
        rationale=["Locking avoids items added after payment that never arrive."],
        open_questions=["Should children's accounts need approval for every item?"],
        color_names=["member-1", "member-2", "member-3", "lock-banner"],
    ),
    Topic(
        slug="returns-refunds",
        name="Returns and Refunds",
        prefix="RR",
        facts=lambda r: {
            "window_hours": r.choice((24, 48, 72)),
            "photo_over": r.choice(("€5", "€10", "€15")),
            "auto_under": r.choice(("€5", "€8", "€10")),
            "refund_days": r.choice((3, 5)),
            "abuse_limit": r.choice((3, 4, 5)),
        },
        summary="Reporting a damaged, missing or wrong item and getting money back without "
        "calling support.",
        problem=[
            "Refunds need a support chat today; median time to a refund is 2 days and refunds "
            "are 35% of all contacts.",
        ],
        goals=["Self-serve refunds for 90% of item issues.", "Refund within minutes when safe."],
        non_goals=["Returning items to the van.", "Refunds for delivery fees."],
        requirements=[
            "Issues can be reported for {window_hours} hours after delivery.",
            "A photo is required for claims over {photo_over}.",
            "Claims under {auto_under} are approved automatically.",
            "Refunds reach the original payment method within {refund_days} working days, or "
            "instantly as credit.",
            "More than {abuse_limit} claims in 30 days sends the next claim to manual review.",
        ],
        metrics=[("Refund contacts to support", "35%", "10%")],
        components=[
            ("issue-picker", "What went wrong?", "Damaged, missing, wrong item, quality."),
            ("photo-step", "Add a photo", "Required over {photo_over}."),
            ("refund-choice", "Refund as credit or to card", "Card takes {refund_days} days."),
        ],
        rules=["Perishables need no return; the customer keeps the item."],
        rationale=["Automatic approval for small claims costs less than reviewing them."],
        open_questions=["Should frequent claimants lose automatic approval for good?"],
        color_names=["issue", "refund", "credit"],
        markets=("Netherlands", "United Kingdom"),
    ),
    Topic(
        slug="promo-codes",
        name="Promo Codes and Vouchers",
        prefix="PC",
        facts=lambda r: {
            "code_example": r.choice(("SPRING-4K7Q", "WELCOME-9XPL", "FRESH-2MZR")),
            "min_basket": r.choice(("€40", "€50", "€60")),
            "stack": r.choice(("one promo code plus one loyalty voucher", "one code only")),
            "max_uses": r.choice((1, 3, 5)),
        },
        summary="Entering a promo code at checkout: validation, stacking with vouchers, and "
        "clear messages when a code does not apply.",
        problem=[
            "One in four promo code attempts fails, and the error 'Invalid code' does not say "
            "why; codes such as {code_example} fail mostly on the minimum basket.",
        ],
        goals=["Say exactly why a code does not apply.", "Stop code sharing abuse."],
        non_goals=["Automatic best-code selection."],
        requirements=[
            "Stacking rule: {stack}.",
            "Welcome codes need a minimum basket of {min_basket}.",
            "A code can be used at most {max_uses} times per customer.",
            "Errors name the reason: expired, minimum basket, already used, not in your area.",
        ],
        metrics=[("Failed code attempts", "25%", "10%")],
        components=[
            ("code-field", "Promo code", "Uppercases as typed; example {code_example}."),
            ("code-error", "Add €6.20 more to use this code", "Names the missing amount."),
        ],
        rules=["Codes never apply to alcohol, tobacco or infant formula."],
        rationale=["Naming the missing amount turned failed attempts into bigger baskets."],
        open_questions=["Should codes be applied automatically from marketing emails?"],
        color_names=["code-valid", "code-error"],
    ),
    Topic(
        slug="click-and-collect",
        name="Click and Collect Lockers",
        prefix="CC",
        facts=lambda r: {
            "hold_hours": r.choice((24, 36, 48)),
            "pin_len": r.choice((4, 6)),
            "chill_temp": r.choice(("2–4 °C", "3–5 °C", "1–4 °C")),
            "locker_brand": r.choice(("CoolBox", "FreshPod", "NordLock")),
            "fee": r.choice(("free", "€0.99", "€1.49")),
        },
        summary="Picking an order up from a chilled locker at a station or supermarket instead "
        "of waiting at home.",
        problem=[
            "Commuters miss deliveries; 14% of failed deliveries were to customers who said "
            "they would rather collect on the way home.",
        ],
        goals=["Offer lockers at the 40 busiest stations.", "No spoiled chilled goods."],
        non_goals=["Frozen goods in lockers (first release)."],
        requirements=[
            "Orders wait in the locker for {hold_hours} hours.",
            "Lockers open with a {pin_len}-digit PIN or the app's Bluetooth unlock.",
            "Chilled compartments hold {chill_temp}.",
            "Locker hardware from {locker_brand}.",
            "Collection is {fee}.",
        ],
        metrics=[("Failed deliveries", "6%", "4%")],
        components=[
            ("locker-map", "Lockers near you", "Map and list; chilled badge."),
            ("pin-card", "Your PIN", "{pin_len} digits, large type, copy disabled."),
            ("hold-timer", "Collect within {hold_hours} h", "Countdown."),
        ],
        rules=["Uncollected orders return to the depot and are refunded minus the locker fee."],
        rationale=["A PIN works when the phone's battery is flat."],
        open_questions=["Can a neighbour collect with a forwarded PIN?"],
        color_names=["locker-pin", "chilled-badge", "map-locker"],
    ),
    Topic(
        slug="order-notifications",
        name="Order Notifications and Quiet Hours",
        prefix="ON",
        facts=lambda r: {
            "quiet": r.choice(("21:00–07:00", "22:00–07:30", "23:00–08:00")),
            "max_day": r.choice((4, 5, 6)),
            "reminder_hours": r.choice((2, 3, 4)),
        },
        summary="Which order updates are pushed, when quiet hours hold them back, and how the "
        "basket reminder works.",
        problem=[
            "Customers get up to nine pushes per order; opt-out within a week of the first "
            "order is 21%.",
        ],
        goals=["At most {max_day} pushes per order day.", "No marketing during quiet hours."],
        non_goals=["SMS.", "Email receipts."],
        requirements=[
            "Quiet hours default to {quiet} in the customer's time zone.",
            "Delivery-day pushes (van on the way, arriving, delivered) ignore quiet hours only "
            "for slots inside them.",
            "An abandoned-basket reminder is sent once, {reminder_hours} hours after the last "
            "edit.",
            "At most {max_day} pushes per customer per day.",
        ],
        metrics=[("Opt-out within 7 days", "21%", "10%")],
        components=[
            ("quiet-hours", "Quiet hours {quiet}", "Time pickers in 30-minute steps."),
            ("channel-list", "What we send", "Order updates, offers, reminders."),
        ],
        rules=["Offers are never pushed during quiet hours."],
        rationale=["One reminder converts as well as three and annoys less."],
        open_questions=["Should quiet hours follow the delivery address's time zone?"],
        color_names=["push-accent"],
    ),
    Topic(
        slug="product-search",
        name="Product Search and Dietary Filters",
        prefix="PS",
        facts=lambda r: {
            "typo": r.choice((1, 2)),
            "filters": r.choice(
                (
                    "vegan, gluten-free, lactose-free, halal, organic",
                    "vegetarian, vegan, nut-free, kosher, low-sugar",
                )
            ),
            "zero_rate": r.choice(("9%", "11%", "13%")),
            "engine": r.choice(("Typesense", "Meilisearch", "OpenSearch")),
        },
        summary="Finding products by name, brand or need, with dietary filters that can be "
        "trusted.",
        problem=[
            "{zero_rate} of searches return nothing, mostly misspellings and Dutch/English "
            "mixes ('pindakaas' vs 'peanut butter').",
        ],
        goals=["Zero-result searches under 3%.", "Dietary filters that never show a wrong item."],
        non_goals=["Recipe search (in the meal kits spec)."],
        requirements=[
            "Typo tolerance of {typo} edit(s) for words of five letters or more.",
            "Dietary filters: {filters}.",
            "A filter is applied only from supplier data, never from product names.",
            "Search engine: {engine}, synonyms maintained by the content team.",
        ],
        metrics=[("Zero-result searches", "{zero_rate}", "3%")],
        components=[
            ("search-bar", "Search products", "Suggestions after two characters."),
            ("diet-chips", "{filters}", "Multi-select; persists per customer."),
        ],
        rules=["Allergen filters hide products whose data is missing."],
        rationale=["Hiding unknowns is safer than guessing for allergies."],
        open_questions=["Do we index products that are out of stock?"],
        color_names=["chip-selected", "chip", "no-results"],
    ),
    Topic(
        slug="larder-pass",
        name="Larder Pass Subscription",
        prefix="LP",
        facts=lambda r: {
            "monthly": r.choice(("€7.99", "€8.99", "€9.99")),
            "yearly": r.choice(("€79", "€89", "€99")),
            "free_over": r.choice(("€30", "€40", "€50")),
            "trial_days": r.choice((14, 30)),
        },
        summary="A delivery subscription: free delivery over a basket threshold and member "
        "prices, paid monthly or yearly.",
        problem=["Delivery fees are the top reason for choosing a competitor in exit surveys."],
        goals=["200,000 members in the first year.", "Members order 30% more often."],
        non_goals=["Family sharing of the pass."],
        requirements=[
            "Price {monthly} a month or {yearly} a year.",
            "Free delivery on baskets over {free_over}.",
            "A {trial_days}-day free trial for new members.",
            "Cancel any time from the account screen in two taps.",
        ],
        metrics=[("Members", "0", "200,000")],
        components=[
            ("pass-card", "Larder Pass · {monthly}/month", "Shows savings so far."),
            ("trial-button", "Try {trial_days} days free", "Primary action."),
        ],
        rules=["Priority slots are included for members."],
        rationale=["A yearly price under ten months of monthly fees drives yearly sign-ups."],
        open_questions=["Should the pass include a monthly voucher?"],
        color_names=["pass-gradient-start", "pass-gradient-end", "savings"],
    ),
    Topic(
        slug="cold-chain",
        name="Cold Chain and Frozen Goods",
        prefix="CH",
        facts=lambda r: {
            "frozen_max": r.choice(("-15 °C", "-18 °C")),
            "chill_max": r.choice(("5 °C", "7 °C")),
            "bag_minutes": r.choice((45, 60, 90)),
            "logger": r.choice(("TempTag", "ColdTrace", "Frostline")),
        },
        summary="Keeping chilled and frozen products at the right temperature from the depot "
        "to the customer's door.",
        problem=["Melted ice cream is the top quality complaint in summer months."],
        goals=["No frozen item above {frozen_max} at handover."],
        non_goals=["Hot food."],
        requirements=[
            "Frozen goods travel in insulated bags rated for {bag_minutes} minutes.",
            "Chilled compartments stay at or below {chill_max}.",
            "Each van carries a {logger} temperature logger; readings attach to the order.",
            "A handover above the limit offers the customer an automatic refund.",
        ],
        metrics=[("Temperature complaints", "3.2 per 1,000 orders", "0.5")],
        components=[
            ("temp-badge", "Kept at {frozen_max}", "On frozen lines in the order."),
            ("logger-readout", "Van temperature", "Driver app only; from {logger}."),
        ],
        rules=["Frozen goods are loaded last and delivered first on a route."],
        rationale=["Loading frozen last shortens their time out of the freezer."],
        open_questions=["Should customers see the temperature history?"],
        color_names=["frozen", "chilled", "ambient"],
    ),
]

GENERIC = {
    "Background": [
        "Larder delivers groceries from 14 depots to about 1.2 million active customers.",
        "Most orders are placed on mobile; web is used mainly for large weekly shops.",
        "This document describes {name} for the next two releases.",
        "The feature touches the customer app, the picker app and the driver app.",
        "Earlier attempts at {noun} were shelved in 2022 when the depot software was replaced.",
    ],
    "Research": [
        "We interviewed 18 customers across three depots and reviewed 600 support tickets.",
        "Diary study participants mentioned {noun} unprompted on the second day.",
        "Competitors offer something similar, but none explains it well in the app.",
        "Customers with children mentioned time pressure at checkout more than anyone else.",
        "Several participants confused this with the loyalty programme at first.",
    ],
    "Dependencies": [
        "The order service must expose the fields described here before the apps can ship.",
        "Legal review is needed for the copy in the Netherlands and the United Kingdom.",
        "The data team owns the dashboards listed under metrics.",
        "Design tokens come from the shared Larder design system, never hard-coded values.",
    ],
    "Rollout": [
        "Staff accounts first for two weeks, then 10% of customers in one depot.",
        "Ramp to all depots after two weeks without a guardrail breach.",
        "The feature ships behind a flag that support can turn off per customer.",
        "Web follows mobile by one release.",
    ],
    "FAQ": [
        "**Does this change prices?** No; anything that costs money is listed under requirements.",
        "**Does it work for business accounts?** Yes, with the same rules unless noted.",
        "**What happens on the web?** The web app follows the same rules one release later.",
        "**Who answers questions about {noun}?** The owner named at the top of this document.",
        "**Is there an API for partners?** Not in this release.",
        "**Can support override it for one customer?** Yes, from the admin console, with a reason.",
    ],
    "Glossary": [
        "**Depot**: a warehouse that picks and dispatches orders for one region.",
        "**Picker**: the staff member who collects the items of an order in the depot.",
        "**Route**: one van's sequence of stops in a delivery slot.",
        "**Basket**: the items a customer has chosen before checkout.",
        "**Handover**: the moment the driver gives the order to the customer.",
        "**Slot**: a delivery window chosen at checkout.",
    ],
    "Risks": [
        "Support volume may rise in the first weeks while customers learn the change.",
        "Depot staff need training; the operations team schedules it before the ramp.",
        "Numbers in this document are estimates from the pilot and will move.",
        "A confusing message could look like a price increase; copy is tested before launch.",
    ],
}


def _fill(template: str, facts: dict[str, Any]) -> str:
    return template.format(**facts)


def _facts(topic: Topic, rng: random.Random) -> dict[str, Any]:
    facts = topic.facts(rng)
    if "tiers" in facts:
        facts.update(tier0=facts["tiers"][0], tier1=facts["tiers"][1], tier2=facts["tiers"][2])
    facts.update(name=topic.name, noun=topic.name.lower())
    return facts


def _prd(topic: Topic, facts: dict[str, Any], rng: random.Random, market: str | None) -> str:
    title = f"{topic.name} — {market}" if market else topic.name
    owner, eng = rng.sample(PEOPLE, 2)
    md: list[str] = [
        f"# PRD: {title}",
        "",
        f"- **Owner:** {owner} (PM)",
        f"- **Engineering lead:** {eng}",
        f"- **Status:** {rng.choice(('Draft', 'Approved', 'In development', 'Shipped'))}",
        f"- **Last updated:** 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    ]
    if market:
        md.append(f"- **Market:** {market} only; the other market has its own PRD")
    md += ["", "## Summary", "", _fill(topic.summary, facts), ""]
    for section in ("Background", "Research"):
        md += [f"## {section}", "", " ".join(_fill(s, facts) for s in _some(rng, section)), ""]
    md += ["## Problem", ""]
    for paragraph in topic.problem:
        md += [_fill(paragraph, facts), ""]
    md += ["## Goals", "", *(f"- {_fill(g, facts)}" for g in topic.goals), ""]
    md += ["## Non-goals", "", *(f"- {_fill(g, facts)}" for g in topic.non_goals), ""]
    md += ["## Requirements", "", "| ID | Requirement | Priority |", "|---|---|---|"]
    for i, req in enumerate(topic.requirements, 1):
        md.append(f"| {topic.prefix}-{i} | {_fill(req, facts)} | P{rng.choice((0, 0, 1, 2))} |")
    md += ["", "## Rules", "", *(f"- {_fill(r, facts)}" for r in topic.rules), ""]
    md += ["## Metrics", "", "| Metric | Baseline | Target |", "|---|---|---|"]
    md += [f"| {_fill(m, facts)} | {_fill(b, facts)} | {t} |" for m, b, t in topic.metrics]
    for section in ("Dependencies", "Rollout", "Risks", "FAQ", "Glossary"):
        md += ["", f"## {section}", "", *(f"- {_fill(s, facts)}" for s in _some(rng, section))]
    md += ["", "## Appendix: pilot results by depot", ""]
    md += ["| Depot | Orders | Contacts per 1,000 | Satisfaction |", "|---|---|---|---|"]
    for depot in rng.sample(DEPOTS, rng.randint(5, 10)):
        md.append(
            f"| {depot} | {rng.randint(900, 9000):,} | {rng.randint(5, 60)} |"
            f" {rng.randint(62, 94)}% |"
        )
    md += ["", "## Decision log", ""]
    for _ in range(rng.randint(2, 4)):
        md.append(
            f"- 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}: "
            f"{rng.choice(DECISIONS)} ({rng.choice(PEOPLE)})"
        )
    md += ["", "## Open questions", "", *(f"- {_fill(q, facts)}" for q in topic.open_questions)]
    return "\n".join(md) + "\n"


def _as_text(markdown: str) -> str:
    """The same PRD as a plain-text memo: headings in capitals, no Markdown marks."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("# "):
            line = line[2:].upper()
        elif line.startswith("## "):
            line = "\n" + line[3:].upper()
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            line = "  " + " / ".join(c.strip() for c in line.strip("|").split("|"))
        line = line.replace("**", "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _some(rng: random.Random, section: str) -> list[str]:
    pool = GENERIC[section]
    return rng.sample(pool, rng.randint(2, len(pool)))


def _design(topic: Topic, facts: dict[str, Any], rng: random.Random, platform: str) -> dict:
    owner = rng.choice(PEOPLE)
    screens = []
    names = ("Overview", "Detail", "Edit", "Confirmation", "Settings", "Error handling")
    for s, screen in enumerate(names[: rng.randint(3, 6)]):
        comps = topic.components if s == 0 else rng.sample(topic.components, 2)
        screens.append(
            {
                "name": f"{topic.name}: {screen} ({platform})",
                "purpose": f"{screen} step of {topic.name.lower()} on {platform}.",
                "components": [
                    {
                        "id": f"{ctype}-{s}",
                        "type": ctype,
                        "label": _fill(label, facts),
                        "behavior": _fill(behavior, facts),
                        "states": rng.sample(STATES, rng.randint(6, 14)),
                    }
                    for ctype, label, behavior in comps
                ],
            }
        )
    colors = {f"{name}-{shade}": _hex(rng) for name in topic.color_names for shade in (
        "bg", "fg", "border", "hover", "pressed", "dark-bg", "dark-fg")}  # fmt: skip
    spacing = {f"space-{i}": f"{4 * i}px" for i in range(1, rng.randint(9, 14))}
    typography = {
        t: f"{rng.choice((11, 12, 13, 14, 16, 17, 20, 24, 28, 34))}px" for t in TYPE_SCALE
    }
    return {
        "title": f"{topic.name} — {platform}",
        "owner": f"{owner}",
        "platform": platform,
        "status": rng.choice(("draft", "in-review", "approved", "shipped")),
        "version": f"{rng.randint(1, 4)}.{rng.randint(0, 9)}",
        "summary": _fill(topic.summary, facts),
        "screens": screens,
        "rules": [_fill(r, facts) for r in topic.rules],
        "tokens": {"color": colors, "spacing": spacing, "typography": typography},
        "rationale": [_fill(r, facts) for r in topic.rationale],
        "open_questions": [_fill(q, facts) for q in topic.open_questions],
    }


def _token_sheet(rng: random.Random, brand: str) -> dict:
    """A design-system colour sheet: dozens of hex tokens and almost no prose."""
    roles = ("primary", "secondary", "tertiary", "neutral", "error", "warning", "success", "info")
    steps = (50, 100, 200, 300, 400, 500, 600, 700, 800, 900)
    return {
        "title": f"{brand} colour palette",
        "owner": rng.choice(PEOPLE),
        "status": "approved",
        "summary": f"Every colour token of the {brand} brand, light and dark, by role and step.",
        "tokens": {
            "color": {f"{role}-{step}": _hex(rng) for role in roles for step in steps},
            "semantic": {
                "brand-primary": _hex(rng),
                "focus-ring": _hex(rng),
                "price-discount": _hex(rng),
                "out-of-stock": _hex(rng),
            },
        },
    }


def generate(root: Path, *, seed: int = SEED) -> list[str]:
    """Write the corpus under ``root``; returns the relative paths, in order."""
    rng = random.Random(seed)
    teams = list(TEAMS)
    rng.shuffle(teams)
    written: list[str] = []

    def write(rel: str, data: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data, encoding="utf-8")
        written.append(rel)

    for i, topic in enumerate(TOPICS):
        for market in topic.markets or (None,):
            facts = _facts(topic, rng)
            if market == "United Kingdom":
                facts = {k: v.replace("€", "£") if isinstance(v, str) else v
                         for k, v in facts.items()}  # fmt: skip
            prd = _prd(topic, facts, rng, market)
            suffix = f"-{market.lower().replace(' ', '-')}" if market else ""
            if rng.random() < 0.3:
                write(f"prds/{topic.slug}{suffix}.txt", _as_text(prd))
            else:
                write(f"prds/{topic.slug}{suffix}.md", prd)
        # The same feature designed twice by two teams, each with its own numbers and colours.
        for platform, team in (("mobile", teams[i % 12]), ("web", teams[(i + 5) % 12])):
            facts = _facts(topic, rng)
            design = _design(topic, facts, rng, platform)
            write(
                f"designs/{team}_team/{topic.slug}-{platform}.json",
                json.dumps(design, indent=2, ensure_ascii=False) + "\n",
            )
    for n, brand in enumerate(("Larder", "Larder Fresh", "Larder Business")):
        slug = brand.lower().replace(" ", "-")
        sheet = json.dumps(_token_sheet(rng, brand), indent=2, ensure_ascii=False) + "\n"
        write(f"designs/{teams[n]}_team/{slug}-palette.json", sheet)
    return written


def digest(root: Path, paths: list[str]) -> str:
    """One hash over every file's path and bytes: what the question set was written against."""
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


if __name__ == "__main__":
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else SEED
    out = Path(sys.argv[1])
    paths = generate(out, seed=seed)
    print(len(paths), "files, digest", digest(out, paths))
