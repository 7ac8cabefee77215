"""The tokenizer of the target-filter grammar (see `target_filter`).

Hand-written rather than a regular expression over the whole text so that
every error names the exact 1-based character where the text stops making
sense and what would have been accepted there. Nothing here interprets a
token: identifiers are not looked up, strings are not unquoted into code.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Final

from v2c.contract.errors import FilterSyntaxError

MAX_INTEGER_DIGITS: Final = 9  # years and counters; longer is a typo or an attack
_WHITESPACE: Final = frozenset(" \t\r\n")
_KEYWORDS: Final = {"and": "AND", "or": "OR", "in": "IN"}
# Longest first, so `<=` is not read as `<` followed by `=`.
_OPERATORS: Final = ("<=", ">=", "!=", "<>", "=", "<", ">")


class TokenKind(Enum):
    IDENT = "an attribute name"
    STRING = "a string literal"
    INTEGER = "an integer"
    OPERATOR = "a comparison operator"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    AND = "AND"
    OR = "OR"
    IN = "IN"
    END = "the end of the filter"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # as written, for messages
    position: int  # 1-based index of the first character
    value: str | int | None = None  # a literal's value; an operator's canonical spelling

    def describe(self) -> str:
        """How an error message refers to this token."""
        if self.kind is TokenKind.END:
            return "the end of the filter"
        shown = self.text if len(self.text) <= 30 else self.text[:30] + "..."
        return repr(shown)


def fail(position: int, expected: str, found: str) -> FilterSyntaxError:
    """The one place messages are worded, so they all read the same way."""
    return FilterSyntaxError(
        f"invalid target filter at position {position}: expected {expected}, found {found}",
        position=position,
        expected=expected,
    )


def _describe_char(char: str) -> str:
    if char.isprintable():
        return repr(char)
    return f"the control character U+{ord(char):04X}"


def _is_ident_start(char: str) -> bool:
    return char.isascii() and (char.isalpha() or char == "_")


def _is_ident_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _read_string(text: str, start: int) -> tuple[Token, int]:
    """Read a single-quoted literal starting at index `start` (the quote).

    Escapes: a doubled quote (`''`, as in SQL) or `\\'` for a quote, `\\\\` for
    a backslash. Control characters are refused: a filter is shown in logs,
    the API and the CLI, and a raw newline or escape sequence there misleads.
    """
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                chars.append("'")
                i += 2
                continue
            value = "".join(chars)
            return Token(TokenKind.STRING, text[start : i + 1], start + 1, value), i + 1
        if char == "\\":
            following = text[i + 1] if i + 1 < len(text) else ""
            if following not in ("'", "\\"):
                found = _describe_char(following) if following else "the end of the filter"
                raise fail(i + 2, "\\' or \\\\ after a backslash", found)
            chars.append(following)
            i += 2
            continue
        if unicodedata.category(char) == "Cc":
            raise fail(i + 1, "a printable character or a closing quote", _describe_char(char))
        chars.append(char)
        i += 1
    raise fail(
        len(text) + 1,
        f"a closing quote for the string opened at position {start + 1}",
        "the end of the filter",
    )


def _read_integer(text: str, start: int) -> tuple[Token, int]:
    end = start
    while end < len(text) and text[end].isascii() and text[end].isdigit():
        end += 1
    digits = text[start:end]
    if len(digits) > MAX_INTEGER_DIGITS:
        raise fail(
            start + 1, f"an integer of at most {MAX_INTEGER_DIGITS} digits", f"{len(digits)} digits"
        )
    if end < len(text) and _is_ident_char(text[end]):
        raise fail(end + 1, "a space, an operator or ')' after a number", repr(text[end]))
    return Token(TokenKind.INTEGER, digits, start + 1, int(digits)), end


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens, ending with one END token."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in _WHITESPACE:
            i += 1
        elif char == "'":
            token, i = _read_string(text, i)
            tokens.append(token)
        elif char.isascii() and char.isdigit():
            token, i = _read_integer(text, i)
            tokens.append(token)
        elif _is_ident_start(char):
            end = i + 1
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            word = text[i:end]
            keyword = _KEYWORDS.get(word.lower())
            kind = TokenKind[keyword] if keyword else TokenKind.IDENT
            tokens.append(Token(kind, word, i + 1))
            i = end
        elif char in "(),":
            kind = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA}[char]
            tokens.append(Token(kind, char, i + 1))
            i += 1
        else:
            operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if operator is None:
                raise fail(
                    i + 1,
                    "an attribute name, a literal, an operator, AND, OR, IN or a parenthesis",
                    _describe_char(char),
                )
            canonical = "!=" if operator == "<>" else operator
            tokens.append(Token(TokenKind.OPERATOR, operator, i + 1, canonical))
            i += len(operator)
    tokens.append(Token(TokenKind.END, "", len(text) + 1))
    return tokens
