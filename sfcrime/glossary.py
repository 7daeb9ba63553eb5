"""What the codes among the crime types mean, where a source says; "unknown" where none does.

The calls' `original_crime_type_name` is what the dispatcher typed: mostly words, sometimes a statute
number or a short code. Only meanings with a published source are given:
- 22500e, 22500f: California Vehicle Code section 22500, subsections (e) and (f), "Prohibited Stopping,
  Standing, or Parking" (leginfo.legislature.ca.gov, VEH 22500).
- 5150: California Welfare and Institutions Code section 5150, a 72-hour psychiatric hold.
Codes that are common in the file but have no source we could find are listed as unknown, so a reader
knows they are codes and not words. Dispositions have their own descriptions (radio_code.json).
"""

from __future__ import annotations

UNKNOWN = "code, meaning unknown"

MEANINGS = {
    "22500e": "parking: Vehicle Code 22500(e), at a driveway",
    "22500f": "parking: Vehicle Code 22500(f), on a sidewalk",
    "5150": "psychiatric hold: W&I Code 5150",
    "Poss": UNKNOWN,
    "Att": UNKNOWN,
    "601": UNKNOWN,
    "500e": UNKNOWN,
    "Rep": UNKNOWN,
    "Jo": UNKNOWN,
    "Dw": UNKNOWN,
    "909": UNKNOWN,
    "7.2.46": UNKNOWN,
    "518": UNKNOWN,
}


def meaning(crime_type: str) -> str | None:
    """The glossary's entry for a crime type, or None for one in plain words."""
    return MEANINGS.get(crime_type)


def labelled(crime_type: str) -> str:
    """A crime type with its meaning in brackets when it is a code: `22500e (parking: ...)`."""
    text = meaning(crime_type)
    return f"{crime_type} ({text})" if text else crime_type
