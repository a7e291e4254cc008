"""The collections policy and what it asks of one invoice today. Pure: no I/O, no clock.

A policy is a list of reminder days relative to the due date (negative: before it), a final
notice day and the day an unpaid invoice is marked uncollectible, all in whole days past due.
For one open invoice, `next_step` answers the one step a collections pass should take now:

- the latest reminder or final notice whose day has come and that was not sent yet; older
  ones that were missed (cron down, a policy change) are skipped rather than sent in a burst;
- uncollectible once the invoice is `uncollectible_after_days` past due and the final notice
  went out at least (uncollectible day - final notice day) days before, so a customer always
  gets the grace the policy promises, even for an invoice that was already late when
  collections started.

Steps are named for people and for idempotency keys: "reminder-3" (3 days before the due date),
"reminder+7", "final_notice", "uncollectible".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

FINAL_NOTICE = "final_notice"
UNCOLLECTIBLE = "uncollectible"
# Bounds of any policy day: a year either side of the due date is plenty for a dunning plan.
MAX_DAYS = 365

StepKind = Literal["reminder", "final_notice", "uncollectible"]


def reminder_step(day: int) -> str:
    """The step name of a reminder `day` days after the due date (negative: before it)."""
    return f"reminder{day:+d}"


def step_kind(step: str) -> StepKind:
    if step == FINAL_NOTICE:
        return "final_notice"
    if step == UNCOLLECTIBLE:
        return "uncollectible"
    return "reminder"


def describe_step(step: str) -> str:
    """'Reminder 3 days before the due date', 'Final notice', ... (for the page and the log)."""
    if step == FINAL_NOTICE:
        return "Final notice"
    if step == UNCOLLECTIBLE:
        return "Marked uncollectible"
    day = int(step.removeprefix("reminder"))
    if day == 0:
        return "Reminder on the due date"
    unit = "day" if abs(day) == 1 else "days"
    return f"Reminder {abs(day)} {unit} {'before' if day < 0 else 'after'} the due date"


def short_step(step: str) -> str:
    """'Reminder -3 d', 'Reminder +7 d', 'Final notice', 'Uncollectible' (for narrow tables)."""
    if step == FINAL_NOTICE:
        return "Final notice"
    if step == UNCOLLECTIBLE:
        return "Uncollectible"
    return f"Reminder {int(step.removeprefix('reminder')):+d} d"


@dataclass(frozen=True)
class CollectionsPolicy:
    """Days relative to the due date; build with `CollectionsPolicy.of` to get it checked."""

    reminder_days: tuple[int, ...] = (-3, 7, 14)
    final_notice_day: int = 21
    uncollectible_after_days: int = 45

    @classmethod
    def of(
        cls, reminder_days: Iterable[int], final_notice_day: int, uncollectible_after_days: int
    ) -> CollectionsPolicy:
        """A checked policy; ValueError with a sentence saying what to change."""
        days = tuple(sorted(set(reminder_days)))
        problems = policy_problems(days, final_notice_day, uncollectible_after_days)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(days, final_notice_day, uncollectible_after_days)

    @property
    def send_steps(self) -> list[tuple[int, str]]:
        """(day, step) of every mail the policy sends, in order: reminders, then final notice."""
        return [(d, reminder_step(d)) for d in self.reminder_days] + [
            (self.final_notice_day, FINAL_NOTICE)
        ]

    def describe(self) -> str:
        reminders = ", ".join(f"{d:+d}" for d in self.reminder_days) or "none"
        return (
            f"reminders on days {reminders} from the due date, final notice on day "
            f"{self.final_notice_day:+d}, uncollectible from day {self.uncollectible_after_days:+d}"
        )


def policy_problems(
    reminder_days: tuple[int, ...], final_notice_day: int, uncollectible_after_days: int
) -> list[str]:
    """What is wrong with a policy, one sentence each (empty when it is sound)."""
    problems = []
    for day in (*reminder_days, final_notice_day, uncollectible_after_days):
        if abs(day) > MAX_DAYS:
            problems.append(f"day {day} is more than {MAX_DAYS} days from the due date")
    if final_notice_day < 1:
        problems.append(
            f"the final notice (day {final_notice_day}) must come after the due date: use 1 or more"
        )
    late = [d for d in reminder_days if d >= final_notice_day]
    if late:
        problems.append(
            f"reminder days {late} are not before the final notice (day {final_notice_day}): "
            "reminders come first"
        )
    if uncollectible_after_days <= final_notice_day:
        problems.append(
            f"uncollectible after {uncollectible_after_days} days must be later than the final "
            f"notice (day {final_notice_day}), so the customer can still pay after it"
        )
    return problems


def days_past_due(due_at: datetime, now: datetime) -> int:
    """Calendar days (UTC) from the due date to `now`: 0 on the due date, -3 three days before
    it, as a person reading the invoice counts them. Both times must be timezone-aware."""
    return (now.astimezone(UTC).date() - due_at.astimezone(UTC).date()).days


@dataclass(frozen=True)
class PlannedStep:
    step: str
    day: int  # the policy day the step belongs to
    days_past_due: int  # of the invoice, now

    @property
    def kind(self) -> StepKind:
        return step_kind(self.step)


def next_step(
    policy: CollectionsPolicy,
    *,
    due_at: datetime,
    now: datetime,
    done: Mapping[str, datetime],
) -> PlannedStep | None:
    """The one step to take for an open invoice now, or None.

    `done` maps the steps already taken for the invoice to when they were taken.
    """
    past = days_past_due(due_at, now)
    if UNCOLLECTIBLE in done:
        return None
    final_at = done.get(FINAL_NOTICE)
    grace = timedelta(days=policy.uncollectible_after_days - policy.final_notice_day)
    if past >= policy.uncollectible_after_days and final_at is not None and now - final_at >= grace:
        return PlannedStep(UNCOLLECTIBLE, policy.uncollectible_after_days, past)
    due_sends = [(day, step) for day, step in policy.send_steps if day <= past]
    if not due_sends:
        return None
    day, step = due_sends[-1]
    # Once a later mail went out, an earlier one is never sent (a shorter policy, say).
    sent_days = [d for d, s in policy.send_steps if s in done]
    if step in done or (sent_days and max(sent_days) >= day):
        return None
    return PlannedStep(step, day, past)
