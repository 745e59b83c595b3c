package addrpat

import "testing"

func TestSender(t *testing.T) {
	cases := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"alice@example.com", []string{"alice@example.com", "Alice@EXAMPLE.com"}, []string{"alice@example.org", "xalice@example.com", "alice@sub.example.com", ""}},
		{"@example.com", []string{"a@example.com", "B.C@Example.COM"}, []string{"a@sub.example.com", "a@example.com.evil", "example.com", ""}},
		{"*@example.com", []string{"a@example.com"}, []string{"a@xexample.com", "a@sub.example.com"}},
		{"*@*.example.com", []string{"a@sub.example.com", "a@b.c.example.com"}, []string{"a@example.com", "a@sub.example.com.evil"}},
		{"alerts-*@example.com", []string{"alerts-db@example.com", "alerts-@example.com"}, []string{"alert@example.com"}},
		{"<>", []string{""}, []string{"a@example.com"}},
		{"*@münchen.example", []string{"jörg@xn--mnchen-3ya.example", "a@MÜNCHEN.example"}, []string{"a@munchen.example"}},
		{"jörg@example.com", []string{"JÖRG@example.com"}, []string{"jorg@example.com"}},
	}
	for _, tc := range cases {
		p, err := ParseSender(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		checkMatch(t, tc.pattern, p, tc.match, tc.miss)
	}
}

// checkMatch checks that m, compiled from pattern, matches each of match
// and none of miss.
func checkMatch(t *testing.T, pattern string, m interface{ Match(string) bool }, match, miss []string) {
	t.Helper()
	for _, a := range match {
		if !m.Match(a) {
			t.Errorf("%q does not match %q", pattern, a)
		}
	}
	for _, a := range miss {
		if m.Match(a) {
			t.Errorf("%q matches %q", pattern, a)
		}
	}
}

func TestDomain(t *testing.T) {
	cases := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"example.com", []string{"example.com", "EXAMPLE.COM", "example.com."}, []string{"sub.example.com", "xexample.com"}},
		{".example.com", []string{"sub.example.com", "a.b.example.com"}, []string{"example.com", "xexample.com"}},
		{"*.example.com", []string{"sub.example.com"}, []string{"example.com"}},
		{"*", []string{"example.com", "a.b"}, nil},
		{"bücher.example", []string{"xn--bcher-kva.example", "BÜCHER.example"}, []string{"bucher.example"}},
	}
	for _, tc := range cases {
		p, err := ParseDomain(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		checkMatch(t, tc.pattern, p, tc.match, tc.miss)
	}
}

func TestBadPatterns(t *testing.T) {
	for _, p := range []string{"", "nobody", "@", "a@", "a@b@c", "a b@c", "a@b..c", "x\x00@y", "a@\xff"} {
		if _, err := ParseSender(p); err == nil {
			t.Errorf("sender pattern %q accepted", p)
		}
	}
	for _, p := range []string{"", "a@b", "a..b", ".", "a b"} {
		if _, err := ParseDomain(p); err == nil {
			t.Errorf("domain pattern %q accepted", p)
		}
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		p, s string
		ok   bool
	}{
		{"*", "", true}, {"a*b*c", "abc", true}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false},
		{"**", "x", true}, {"*a", "bbba", true}, {"*a", "bbab", false}, {"", "", true}, {"", "a", false},
	}
	for _, tc := range cases {
		if glob(tc.p, tc.s) != tc.ok {
			t.Errorf("glob(%q, %q) = %v", tc.p, tc.s, !tc.ok)
		}
	}
}

func TestDomainOf(t *testing.T) {
	for in, want := range map[string]string{"a@b.example": "b.example", `"a@b"@c.example`: "c.example", "": "", "local": ""} {
		if got := DomainOf(in); got != want {
			t.Errorf("DomainOf(%q) = %q, want %q", in, got, want)
		}
	}
}
