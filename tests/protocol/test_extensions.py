"""hub.protocol.extensions: the Sec-WebSocket-Extensions header (RFC 6455 section 9.1).

::

    Sec-WebSocket-Extensions = extension-list
    extension-list = 1#extension
    extension = extension-token *( ";" extension-param )
    extension-param = token [ "=" (token | quoted-string) ]

RFC 6455 section 9.1: "When using the quoted-string syntax variant, the value after
quoted-string unescaping MUST conform to the 'token' ABNF." RFC 9110 section 5.6.1: a list may
contain empty elements, and the recipient ignores them. RFC 7692 section 5 builds on this grammar
(several offers, in the client's order of preference, in one header or across several).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.protocol.extensions import ExtensionOffer, parse_extensions, serialize_extension
from tests.hypothesis_profiles import budget

#: RFC 9110 section 5.6.2: tchar.
TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Visible ASCII characters that are not tchar (delimiters).
DELIMITERS = '"(),/:;<=>?@[\\]{}'

PMD = "permessage-deflate"


def parse(*values: str) -> list[ExtensionOffer]:
    return parse_extensions(values)


def parse_error(*values: str) -> str:
    with pytest.raises(ValueError) as info:
        parse_extensions(values)
    return str(info.value)


# --- Section 9.1: the grammar, valid values -------------------------------------------------------


class TestSection9_1Valid:
    def test_no_header(self) -> None:
        assert parse_extensions([]) == []

    def test_extension_without_params(self) -> None:
        assert parse(PMD) == [(PMD, [])]

    def test_param_without_value(self) -> None:
        assert parse(f"{PMD}; client_max_window_bits") == [
            (PMD, [("client_max_window_bits", None)])
        ]

    def test_param_with_value(self) -> None:
        assert parse(f"{PMD}; server_max_window_bits=10") == [
            (PMD, [("server_max_window_bits", "10")])
        ]

    def test_params_keep_their_order_and_duplicates(self) -> None:
        # Validating the parameters is the extension's job (RFC 7692 section 7.1), not the
        # parser's: it reports them all, in order, duplicates included.
        value = f"{PMD}; b=2; a; b=1; a"
        assert parse(value) == [(PMD, [("b", "2"), ("a", None), ("b", "1"), ("a", None)])]

    def test_several_offers_in_one_header(self) -> None:
        value = f"{PMD}; client_max_window_bits=10, {PMD}, x-webkit-deflate-frame; no_context"
        assert parse(value) == [
            (PMD, [("client_max_window_bits", "10")]),
            (PMD, []),
            ("x-webkit-deflate-frame", [("no_context", None)]),
        ]

    def test_offers_across_headers_keep_their_order(self) -> None:
        assert parse(f"{PMD}; a=1", "foo, bar; b", f"{PMD}") == [
            (PMD, [("a", "1")]),
            ("foo", []),
            ("bar", [("b", None)]),
            (PMD, []),
        ]

    def test_quoted_value_is_unquoted(self) -> None:
        assert parse(f'{PMD}; client_max_window_bits="10"') == [
            (PMD, [("client_max_window_bits", "10")])
        ]

    def test_quoted_value_with_escapes(self) -> None:
        # A quoted-pair (RFC 9110 section 5.6.4) stands for the escaped character itself.
        assert parse(f'{PMD}; x="1\\0"; y="\\a\\b"') == [(PMD, [("x", "10"), ("y", "ab")])]

    def test_quoted_value_with_every_tchar(self) -> None:
        assert parse(f'a; b="{TCHARS}"') == [("a", [("b", TCHARS)])]

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(f"{PMD};client_max_window_bits;server_max_window_bits=9", id="none"),
            pytest.param(
                f"  {PMD} ;  client_max_window_bits ;server_max_window_bits = 9  ", id="spaces"
            ),
            pytest.param(
                f"\t{PMD}\t;\tclient_max_window_bits\t;\tserver_max_window_bits\t=\t9\t", id="tabs"
            ),
            pytest.param(
                f'{PMD} ; client_max_window_bits ; server_max_window_bits= "9" ', id="quoted"
            ),
        ],
    )
    def test_optional_whitespace(self, value: str) -> None:
        assert parse(value) == [
            (PMD, [("client_max_window_bits", None), ("server_max_window_bits", "9")])
        ]

    @pytest.mark.parametrize(
        ("values", "names"),
        [
            pytest.param(("",), [], id="empty-header"),
            pytest.param(("   ",), [], id="blank-header"),
            pytest.param((",",), [], id="lone-comma"),
            pytest.param((" , ,\t,",), [], id="only-commas"),
            pytest.param((f",{PMD}",), [PMD], id="leading-comma"),
            pytest.param((f"{PMD},",), [PMD], id="trailing-comma"),
            pytest.param(("a,,b , , c",), ["a", "b", "c"], id="inner-empty"),
            pytest.param(("", "a", ",", "b"), ["a", "b"], id="empty-headers-among-others"),
        ],
    )
    def test_empty_list_elements_are_ignored(
        self, values: tuple[str, ...], names: list[str]
    ) -> None:
        assert [name for name, _ in parse_extensions(values)] == names

    def test_names_are_kept_as_sent(self) -> None:
        # The parser does not fold case; matching names is the caller's business.
        assert parse("Permessage-Deflate; Client_Max_Window_Bits") == [
            ("Permessage-Deflate", [("Client_Max_Window_Bits", None)])
        ]

    def test_takes_any_iterable(self) -> None:
        assert parse_extensions(iter(["a", "b"])) == [("a", []), ("b", [])]


# --- Section 9.1: the grammar, invalid values -----------------------------------------------------


class TestSection9_1Invalid:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(";", id="lone-semicolon"),
            pytest.param(f"; {PMD}", id="leading-semicolon"),
            pytest.param(f"{PMD};", id="trailing-semicolon"),
            pytest.param(f"{PMD}; ;a", id="empty-param"),
            pytest.param(f"{PMD};; a", id="double-semicolon"),
            pytest.param(f"{PMD} client_max_window_bits", id="missing-semicolon"),
            pytest.param(f"{PMD} {PMD}", id="missing-comma"),
            pytest.param(f"{PMD}=1", id="value-on-extension"),
            pytest.param(f"{PMD}; =10", id="value-without-name"),
            pytest.param(f"{PMD}; a=", id="missing-value"),
            pytest.param(f"{PMD}; a= ; b", id="blank-value"),
            pytest.param(f"{PMD}; a==1", id="double-equals"),
            pytest.param(f"{PMD}; a=1=2", id="two-values"),
            pytest.param(f"{PMD}; a=1 2", id="space-in-value"),
            pytest.param(f"{PMD}; a=@", id="delimiter-value"),
            pytest.param(f"{PMD}; a=1;,", id="semicolon-then-comma"),
            pytest.param("per/message", id="slash-in-name"),
            pytest.param("(comment)", id="comment"),
            pytest.param("{x}", id="braces"),
            pytest.param("pérmessage-deflate", id="non-ascii-name"),
            pytest.param(f"{PMD}; a=é", id="non-ascii-value"),
            pytest.param(f"{PMD}\r\n; a", id="crlf"),
            pytest.param(f"{PMD}\x00", id="nul"),
            pytest.param(f"{PMD}; a=\x7f", id="del"),
        ],
    )
    def test_garbage(self, value: str) -> None:
        message = parse_error(value)
        # The message says what was expected, where, and in which value.
        assert re.search(r"^expected .+ at position \d+ of ", message), message
        assert repr(value) in message

    def test_error_position(self) -> None:
        value = f"{PMD}; a=1 2"
        # The position is that of the offending character: the "2".
        assert parse_error(value) == f"expected ',' at position {value.index('2')} of {value!r}"

    def test_error_names_the_bad_header_of_several(self) -> None:
        message = parse_error("a; b", "c d", "e")
        assert "'c d'" in message
        assert "'a; b'" not in message

    @pytest.mark.parametrize(
        "quoted",
        [
            pytest.param('""', id="empty"),
            pytest.param('"1 0"', id="space"),
            pytest.param('"1,0"', id="comma"),
            pytest.param('"1;0"', id="semicolon"),
            pytest.param('"a=b"', id="equals"),
            pytest.param('"\\""', id="escaped-quote"),
            pytest.param('"é"', id="non-ascii"),
            pytest.param('"\t"', id="tab"),
        ],
    )
    def test_quoted_value_that_is_not_a_token(self, quoted: str) -> None:
        message = parse_error(f"{PMD}; client_max_window_bits={quoted}")
        assert "a quoted parameter value must be a token once unquoted" in message

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(f'{PMD}; a="10', id="unterminated"),
            pytest.param(f'{PMD}; a="10\\"', id="escaped-closing-quote"),
            pytest.param(f'{PMD}; a="', id="lone-quote"),
        ],
    )
    def test_unterminated_quoted_string(self, value: str) -> None:
        assert "unterminated quoted string" in parse_error(value)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(f'{PMD}; a="1"0', id="text-after-quote"),
            pytest.param(f'{PMD}; "a"=1', id="quoted-name"),
            pytest.param(f'"{PMD}"', id="quoted-extension"),
        ],
    )
    def test_quotes_in_the_wrong_place(self, value: str) -> None:
        parse_error(value)

    @pytest.mark.parametrize("char", [c for c in DELIMITERS if c not in ",;"])
    def test_delimiter_in_a_name(self, char: str) -> None:
        # "," and ";" separate elements and parameters; every other delimiter is an error.
        parse_error(f"per{char}message")


# --- serialize_extension --------------------------------------------------------------------------


class TestSerialize:
    @pytest.mark.parametrize(
        ("name", "params", "expected"),
        [
            (PMD, [], PMD),
            (PMD, [("client_max_window_bits", None)], f"{PMD}; client_max_window_bits"),
            (
                PMD,
                [("server_no_context_takeover", None), ("client_max_window_bits", "12")],
                f"{PMD}; server_no_context_takeover; client_max_window_bits=12",
            ),
        ],
    )
    def test_serialize(
        self, name: str, params: list[tuple[str, str | None]], expected: str
    ) -> None:
        assert serialize_extension(name, params) == expected

    @pytest.mark.parametrize(
        "offer",
        [
            (PMD, []),
            (PMD, [("client_max_window_bits", None)]),
            (PMD, [("a", "1"), ("b", None), ("a", "1")]),
            ("x", [("y", TCHARS)]),
        ],
    )
    def test_round_trip(self, offer: ExtensionOffer) -> None:
        assert parse(serialize_extension(*offer)) == [offer]


# --- properties -----------------------------------------------------------------------------------

TOKENS = st.text(alphabet=TCHARS, min_size=1, max_size=12)
PARAMS = st.lists(st.tuples(TOKENS, st.none() | TOKENS), max_size=5)
OFFERS = st.lists(st.tuples(TOKENS, PARAMS), max_size=5)


@budget()
@given(OFFERS, st.data())
def test_serialize_parse_round_trip(offers: list[ExtensionOffer], data: st.DataObject) -> None:
    """Offers serialized, joined with commas and spread over headers parse back unchanged."""
    texts = [serialize_extension(name, params) for name, params in offers]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(texts)), max_size=3)))
    headers = [", ".join(texts[a:b]) for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True)]
    assert parse_extensions(headers) == offers


@budget()
@given(OFFERS)
def test_quoting_every_value_changes_nothing(offers: list[ExtensionOffer]) -> None:
    quoted = ", ".join(
        "; ".join([name] + [p if v is None else f'{p}="{v}"' for p, v in params])
        for name, params in offers
    )
    assert parse(quoted) == offers


@budget(2)
@given(st.text(alphabet=TCHARS + DELIMITERS + ' \t"\\\x00é', max_size=60))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    """Any header value is parsed or refused with ValueError: never another exception."""
    try:
        offers = parse(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
        return
    for name, params in offers:
        assert re.fullmatch(f"[{re.escape(TCHARS)}]+", name)
        for param, value in params:
            assert re.fullmatch(f"[{re.escape(TCHARS)}]+", param)
            assert value is None or re.fullmatch(f"[{re.escape(TCHARS)}]+", value)
