package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTP loading (marlin serve --fill-url). One GET per load:
//
//	200        the body is the value; Cache-Control max-age=N (or s-maxage)
//	           is its TTL, none means it does not expire; no-store or
//	           max-age=0 loads it without storing it
//	404, 410   the source has no data (ErrNoData)
//	other      a failure, retried
//
// A body larger than the value limit is a failure too, read no further
// than the limit.

// ErrBadURL: the fill URL template is not usable.
var ErrBadURL = errors.New("fill: bad fill URL")

// keyPlaceholder is replaced by the key in a fill URL template.
const keyPlaceholder = "{key}"

// HTTPLoader returns a Loader that GETs the URL made from template by
// replacing {key} with the escaped key (path-escaped before the '?',
// query-escaped after it). maxValue bounds the body; client nil means a
// client with no overall timeout (each load has its context's).
func HTTPLoader(template string, maxValue int, client *http.Client) (Loader, error) {
	if !strings.Contains(template, keyPlaceholder) {
		return nil, fmt.Errorf("%w: %q has no %s", ErrBadURL, template, keyPlaceholder)
	}
	probe := strings.ReplaceAll(template, keyPlaceholder, "k")
	u, err := url.Parse(probe)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: %q is not an http or https URL", ErrBadURL, template)
	}
	if maxValue <= 0 {
		return nil, fmt.Errorf("%w: maximum value size %d", ErrBadOptions, maxValue)
	}
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: maxWorkersIdle,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	q := strings.Index(template, "?")
	return func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		return httpLoad(ctx, client, expand(template, q, key), maxValue)
	}, nil
}

// maxWorkersIdle: idle connections kept to the source, enough for the
// default worker pool several times over.
const maxWorkersIdle = 64

// expand builds the URL for key; q is the index of the template's '?'
// (-1: none).
func expand(template string, q int, key []byte) string {
	var b strings.Builder
	rest := template
	pos := 0
	for {
		i := strings.Index(rest, keyPlaceholder)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:i])
		if q >= 0 && pos+i > q {
			b.WriteString(url.QueryEscape(string(key)))
		} else {
			b.WriteString(url.PathEscape(string(key)))
		}
		rest = rest[i+len(keyPlaceholder):]
		pos += i + len(keyPlaceholder)
	}
}

func httpLoad(ctx context.Context, client *http.Client, u string, maxValue int) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, 0, ErrNoData
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, 0, fmt.Errorf("fill: %s answered %s", u, resp.Status)
	}
	if resp.ContentLength > int64(maxValue) {
		return nil, 0, fmt.Errorf("fill: %s: body of %d bytes is over the %d-byte value limit", u, resp.ContentLength, maxValue)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(maxValue)+1))
	if err != nil {
		return nil, 0, fmt.Errorf("fill: %s: reading body: %w", u, err)
	}
	if len(body) > maxValue {
		return nil, 0, fmt.Errorf("fill: %s: body is over the %d-byte value limit", u, maxValue)
	}
	ttl, store := cacheTTL(resp.Header.Values("Cache-Control"))
	if !store {
		return body, -1, nil
	}
	return body, ttl, nil
}

// cacheTTL reads a response's Cache-Control: the TTL (zero: none given)
// and whether the value may be stored at all. s-maxage, meant for shared
// caches such as this one, wins over max-age.
func cacheTTL(headers []string) (ttl time.Duration, store bool) {
	maxAge, sMaxAge := int64(-1), int64(-1)
	for _, h := range headers {
		for _, d := range strings.Split(h, ",") {
			d = strings.TrimSpace(strings.ToLower(d))
			name, val, _ := strings.Cut(d, "=")
			val = strings.Trim(val, `"`)
			switch name {
			case "no-store", "no-cache", "private":
				return 0, false
			case "max-age":
				if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 0 {
					maxAge = n
				}
			case "s-maxage":
				if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 0 {
					sMaxAge = n
				}
			}
		}
	}
	age := maxAge
	if sMaxAge >= 0 {
		age = sMaxAge
	}
	switch {
	case age < 0:
		return 0, true
	case age == 0:
		return 0, false
	}
	const maxTTL = 100 * 365 * 24 * 3600 // seconds; beyond that, no expiry
	if age > maxTTL {
		return 0, true
	}
	return time.Duration(age) * time.Second, true
}
