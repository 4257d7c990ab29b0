package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
)

// Limits of route filters (CallbackRoute spec.filter), documented in docs/delivery.md.
const (
	// MaxFilterLength is the longest filter expression accepted, in bytes (the CRD's
	// maxLength as well).
	MaxFilterLength = 4096
	// FilterCostLimit is the most CEL cost units one evaluation of a filter may spend
	// on one callback (cel-go's runtime cost: roughly one unit per operation, one per
	// element visited by exists/all/map/filter). An evaluation that would exceed it stops
	// with an error: the callback does not match and the error is counted. 100,000 units
	// cover, for example, an exists() over a 10,000-element list with a few comparisons
	// per element; the largest callbacks (1 MiB) hold far fewer elements.
	FilterCostLimit = 100_000
	// filterRecursionLimit bounds the parser's nesting depth.
	filterRecursionLimit = 32
)

// Filter variables: what an expression can refer to.
const (
	FilterVarBody    = "body"
	FilterVarQuery   = "query"
	FilterVarCommand = "command"
	FilterVarApp     = "app"
)

var (
	filterEnvOnce sync.Once
	filterEnv     *cel.Env
	errFilterEnv  error
)

// FilterEnv is the CEL environment of route filters: body (dyn: the parsed JSON),
// query (map(string, string)), command and app (string), with cross-type numeric
// comparisons (a JSON number compares with 0 and 0.5 alike) and CEL's standard library
// plus the strings extension the API server's CEL offers too.
func FilterEnv() (*cel.Env, error) {
	filterEnvOnce.Do(func() {
		filterEnv, errFilterEnv = cel.NewEnv(
			cel.Variable(FilterVarBody, cel.DynType),
			cel.Variable(FilterVarQuery, cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable(FilterVarCommand, cel.StringType),
			cel.Variable(FilterVarApp, cel.StringType),
			cel.CrossTypeNumericComparisons(true),
			cel.ParserRecursionLimit(filterRecursionLimit),
			cel.ParserExpressionSizeLimit(MaxFilterLength),
		)
	})
	return filterEnv, errFilterEnv
}

// CompileFilter parses and type-checks a filter expression and returns its program,
// cost-limited to FilterCostLimit. The error is CEL's own message (with line and column),
// which becomes the route's Accepted=False, reason Invalid message.
func CompileFilter(expr string) (cel.Program, error) {
	if len(expr) > MaxFilterLength {
		return nil, fmt.Errorf("filter is %d bytes, more than the limit of %d", len(expr), MaxFilterLength)
	}
	env, err := FilterEnv()
	if err != nil {
		return nil, fmt.Errorf("filter environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("filter: %s", iss.Err().Error())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("filter must be a bool expression, but it is of type %s (compare the value, e.g. body.Flag == true)",
			ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(FilterCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return prg, nil
}

// programCache shares compiled programs between the tables a receiver builds one after
// another: a table swap recompiles only the expressions it has not seen yet. Programs
// are immutable and safe for concurrent use.
var programCache = struct {
	sync.Mutex
	m map[string]cel.Program
}{m: map[string]cel.Program{}}

// maxCachedPrograms bounds programCache; past it the cache is emptied and refilled.
const maxCachedPrograms = 20_000

func cachedFilter(expr string) (cel.Program, error) {
	programCache.Lock()
	p, ok := programCache.m[expr]
	programCache.Unlock()
	if ok {
		return p, nil
	}
	p, err := CompileFilter(expr)
	if err != nil {
		return nil, err
	}
	programCache.Lock()
	if len(programCache.m) >= maxCachedPrograms {
		programCache.m = map[string]cel.Program{}
	}
	programCache.m[expr] = p
	programCache.Unlock()
	return p, nil
}

// FilterInput is one callback as filters see it. Its body and query are parsed on the
// first filter that refers to them, once per callback, and never when no matching route
// has a filter. It is not safe for concurrent use.
type FilterInput struct {
	App, Command string
	RawQuery     string
	Body         []byte

	body, query         any
	bodyDone, queryDone bool
	bodyErr             error
}

// ResolveName implements interpreter.Activation.
func (in *FilterInput) ResolveName(name string) (any, bool) {
	switch name {
	case FilterVarBody:
		if !in.bodyDone {
			in.bodyDone = true
			in.body, in.bodyErr = ParseFilterBody(in.Body)
			if in.bodyErr != nil {
				in.body = types.NewErr("body: %v", in.bodyErr)
			}
		}
		return in.body, true
	case FilterVarQuery:
		if !in.queryDone {
			in.queryDone = true
			m := map[string]string{}
			if v, err := url.ParseQuery(in.RawQuery); err == nil {
				for k, vs := range v {
					if len(vs) > 0 {
						m[k] = vs[0]
					}
				}
			}
			in.query = m
		}
		return in.query, true
	case FilterVarCommand:
		return in.Command, true
	case FilterVarApp:
		return in.App, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (in *FilterInput) Parent() interpreter.Activation { return nil }

// BodyParsed reports whether a filter needed the body (for tests and benchmarks).
func (in *FilterInput) BodyParsed() bool { return in.bodyDone }

// ParseFilterBody decodes a JSON body for filters: objects become map[string]any, arrays
// []any, and numbers int64 when they are integers that fit (Tencent's MsgSeq, MsgKey
// parts and error codes keep their exact value), float64 otherwise.
func ParseFilterBody(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
		return x
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(x), 64); err == nil {
			return f
		}
		return string(x)
	}
	return v
}

// ErrFilterNotBool is returned when a filter evaluates to something other than a bool
// (possible only through dyn values the type checker could not see).
var ErrFilterNotBool = errors.New("filter did not evaluate to a bool")

// Matches reports whether the callback passes the route's filter; a route without a
// filter matches everything. An evaluation error (a missing field, a wrong type, the
// cost limit) is returned with false: the callback does not reach the route.
func (r *Route) Matches(in *FilterInput) (bool, error) {
	if r.filter == nil {
		return true, nil
	}
	out, _, err := r.filter.Eval(in)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, ErrFilterNotBool
	}
	return b, nil
}

// HasFilter reports whether the route has a filter.
func (r *Route) HasFilter() bool { return r.filter != nil }

// FilterRoutes keeps the routes the callback passes, in place (the result shares rs's
// array), calling onErr for each route whose filter failed at run time. It evaluates
// nothing, and parses nothing, when no route has a filter.
func FilterRoutes(rs []*Route, in *FilterInput, onErr func(*Route, error)) []*Route {
	n := 0
	for _, r := range rs {
		ok, err := r.Matches(in)
		if err != nil && onErr != nil {
			onErr(r, err)
		}
		if ok {
			rs[n] = r
			n++
		}
	}
	clear(rs[n:])
	return rs[:n]
}
