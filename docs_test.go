package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// readmeMaxLines bounds README.md: it is the front door, and the
// reference lives in docs/.
const readmeMaxLines = 350

// docPages returns README.md and every page under docs/.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("docs/ has no pages")
	}
	return append([]string{"README.md"}, pages...)
}

// fenced matches a fenced code block; inlineCode an inline code span.
var (
	fenced     = regexp.MustCompile("(?ms)^```.*?^```[^\n]*$")
	inlineCode = regexp.MustCompile("(?s)`[^`]*`")
	mdLink     = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	mdHeading  = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$`)
)

// prose returns a Markdown page without its code: links and headings
// inside code are not links and headings.
func prose(page string) string {
	return inlineCode.ReplaceAllString(fenced.ReplaceAllString(page, ""), "")
}

// anchors returns the anchors GitHub gives the headings of a Markdown
// page: lower case, spaces to '-', punctuation dropped, and "-1", "-2"…
// after a repeated one.
func anchors(page string) map[string]bool {
	got := map[string]bool{}
	seen := map[string]int{}
	for _, m := range mdHeading.FindAllStringSubmatch(fenced.ReplaceAllString(page, ""), -1) {
		a := slug(m[1])
		if n := seen[a]; n > 0 {
			got[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			got[a] = true
		}
		seen[a]++
	}
	return got
}

// slug is GitHub's anchor for a heading's text.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// Every relative link of README.md and docs/*.md names a file or
// directory that exists, and every #anchor a heading of its target page.
func TestDocLinks(t *testing.T) {
	t.Parallel()
	pageAnchors := map[string]map[string]bool{}
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := pageAnchors[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		pageAnchors[path] = anchors(string(b))
		return pageAnchors[path], nil
	}
	links := 0
	for _, page := range docPages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(prose(string(b)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			path, anchor, _ := strings.Cut(target, "#")
			if path == "" {
				path = page
			} else {
				path = filepath.Join(filepath.Dir(page), path)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: no file %s", page, target, path)
				continue
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(path, ".md") {
				t.Errorf("%s: link %q: an anchor into %s, which is not a Markdown page", page, target, path)
				continue
			}
			a, err := anchorsOf(path)
			if err != nil {
				t.Fatal(err)
			}
			if !a[anchor] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", page, target, path, anchor)
			}
		}
	}
	if links < 50 {
		t.Errorf("%d relative links in README.md and docs/; the link pattern is broken", links)
	}
}

// README.md is a front door: at most readmeMaxLines lines, and it links
// to every page of docs/.
func TestReadmeIsAFrontDoor(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if n := strings.Count(readme, "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines; at most %d (move the reference into docs/)", n, readmeMaxLines)
	}
	linked := map[string]bool{}
	for _, m := range mdLink.FindAllStringSubmatch(prose(readme), -1) {
		path, _, _ := strings.Cut(m[1], "#")
		linked[filepath.Clean(path)] = true
	}
	for _, page := range docPages(t)[1:] {
		if !linked[page] {
			t.Errorf("README.md does not link to %s", page)
		}
	}
}

// CI runs the test command README.md states: the one command of the
// first code block under "## Test it" is what .ci/run executes.
func TestCIRunsReadmeTestCommand(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Test it\n")
	if !ok {
		t.Fatal(`README.md has no "## Test it" section`)
	}
	_, block, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatal(`README.md's "Test it" section has no sh code block`)
	}
	block, _, _ = strings.Cut(block, "```")
	lines := strings.Split(strings.TrimSpace(block), "\n")
	if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" {
		t.Fatalf("README.md's test command is %q; want one command", block)
	}
	command := strings.TrimSpace(lines[0])

	b, err = os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "exec" {
			ran = f[1:]
		}
	}
	if len(ran) > 0 && (ran[0] == "bash" || ran[0] == "sh") {
		ran = ran[1:]
	}
	if got := strings.Join(ran, " "); got != command {
		t.Errorf(".ci/run executes %q; README.md's test command is %q", got, command)
	}
	script, _, _ := strings.Cut(command, " ")
	if fi, err := os.Stat(script); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("README.md's test command %q: %s is not an executable file (%v)", command, script, err)
	}
}
