"""Categories of personal data a policy column can declare (``category:``), for the
record of processing activities and for ``consentgate lint``.

The vocabulary follows what GDPR Art. 30 registers usually list; ``none`` marks a column
that holds no personal data. Importing this module stays cheap (no pyspark).
"""

from __future__ import annotations

import re

CATEGORIES = {
    "identifier": "identifiers (customer numbers, account ids)",
    "contact": "contact details (e-mail address, phone number)",
    "name": "names",
    "address": "postal address (street, postcode)",
    "demographic": "demographic data (date of birth, gender, age)",
    "location": "location data",
    "online": "online identifiers (IP address, device or cookie id)",
    "financial": "financial data (card, bank account)",
    "behaviour": "behaviour and transactions (purchases, preferences, timestamps of activity)",
    "free_text": "free text that may contain anything",
    "special": "special categories (Art. 9: health, religion, political opinion, ...)",
    "none": "no personal data",
}
NOT_PERSONAL = "none"

# Column names that usually hold personal data: a column so named and declared
# ``category: none`` is flagged by the linter, in case the declaration is a mistake.
_LOOKS_PERSONAL = re.compile(
    r"(^|_)(e_?mail|phone|mobile|fax|name|surname|address|street|city|zip|postcode|postal|birth|dob|gender|"
    r"ssn|passport|iban|card|ip|ip_address|device_id|cookie|latitude|longitude|lat|lon|health)(_|$)"
)


# Long enough not to occur inside other words: found anywhere in the name, so that
# "zipcode", "birthDate" or "emailAddress" are recognised too.
_PERSONAL_WORDS = (
    "email", "e_mail", "phone", "mobile", "surname", "firstname", "lastname", "fullname", "username", "address",
    "street", "zip", "postcode", "postal", "birth", "passport", "iban", "gender", "latitude", "longitude",
    "cookie", "deviceid", "socialsecurity", "taxid", "nationalid", "creditcard", "cardnumber",
)  # fmt: skip


def looks_personal(column_name: str) -> bool:
    name = column_name.lower()
    squeezed = name.replace("_", "").replace("-", "")
    return bool(_LOOKS_PERSONAL.search(name)) or any(word in squeezed for word in _PERSONAL_WORDS)
